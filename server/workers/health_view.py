"""The supervisor's verdict on each model's health over the workers (docs/operations.md, Workers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from server.api.health import model_service


def cluster_verdict(views: Sequence[Mapping[str, bool] | None]) -> dict[str, bool]:
    """Model service → SERVING on every worker that answered. ``views`` are the workers' own health
    (service → serving); None = a worker that did not answer (dying or restarting: it serves no connection,
    so it has no say). The server's own services ("" and the service names) are not judged here."""
    known = [view for view in views if view is not None]
    prefix = model_service("")
    services = sorted({name for view in known for name in view if name.startswith(prefix)})
    return {name: all(view.get(name, False) for view in known) for name in services}
