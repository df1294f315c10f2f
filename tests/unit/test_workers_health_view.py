"""A worker's public health: a model is SERVING only when it serves here and on every worker (the
supervisor's cluster view); the server's own services stay this process's own."""

from __future__ import annotations

from server.api.health import NOT_SERVING, SERVING, Health


async def test_cluster_view_gates_model_services_only() -> None:
    health = Health(("inferd.v1.InferenceService",))
    await health.set_server(True)
    await health.set_model("m", True)
    await health.set_model("n", False)
    assert health._effective("model/m", SERVING) == SERVING  # alone: no cluster view
    health.set_cluster({"model/m": False, "model/n": True})
    assert health._effective("model/m", SERVING) == NOT_SERVING  # another worker lacks it
    assert health._effective("model/n", NOT_SERVING) == NOT_SERVING  # not here: the cluster cannot add it
    assert health._effective("", SERVING) == SERVING
    assert health.own_serving() == {"": True, "inferd.v1.InferenceService": True, "model/m": True, "model/n": False}
    health.set_cluster({"model/m": True})
    assert health._effective("model/m", SERVING) == SERVING
    await health.shutdown()
    health.set_cluster({"model/m": True})
    assert health.own_serving()["model/m"] is False


def test_cluster_verdict_needs_every_answering_worker_and_ignores_silent_ones() -> None:
    from server.workers.health_view import cluster_verdict

    views = [
        {"": True, "model/m": True, "model/n": True},
        {"": False, "model/m": True, "model/n": False},
        None,  # restarting: no say
    ]
    assert cluster_verdict(views) == {"model/m": True, "model/n": False}
    assert cluster_verdict([{"model/m": True}, {}]) == {"model/m": False}  # a worker that lacks it
    assert cluster_verdict([None]) == {}
