"""``inferd config MODEL``: print the config.pbtxt a model is served with (derived or as written).

A model folder with a bare ``model.onnx`` is served with a config derived from the graph; this prints it
as text format, ready to save as ``MODEL/config.pbtxt`` and edit. It reads ModelMetadata's ``config``
through the SDK, like every client command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from server.cli.connect import connect


def add_parser(sub: Any, add_address: Callable[[argparse.ArgumentParser], None]) -> None:
    config = sub.add_parser(
        "config",
        help="print the config.pbtxt a model is served with (a derived one too), to save and edit",
    )
    config.add_argument("model", help="the model's name")
    add_address(config)


def render(model: str, text: str) -> str:
    """The config with a header saying where to keep it (comments are valid text format)."""
    return f"# the configuration model '{model}' is served with; save it as {model}/config.pbtxt to keep it\n{text}"


def run(args: argparse.Namespace) -> int:
    from google.protobuf import text_format

    with connect(args) as client:
        meta = client.metadata(args.model)
    if not meta.HasField("config"):  # the model's config could not be read: `inferd models` says why
        reason = f"model '{args.model}' has no configuration the server could read (see `inferd models`)"
        print(f"inferd: {reason}", file=sys.stderr)
        return 1
    print(render(args.model, text_format.MessageToString(meta.config)), end="")
    return 0
