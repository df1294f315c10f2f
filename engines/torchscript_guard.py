"""Refusing TorchScript archives whose code touches the filesystem.

TorchScript is code. Most of its operators compute on tensors, but a few read or write files —
``torch.from_file`` (``aten::from_file``) maps any file into a tensor, ``torch.save`` (``aten::save``)
writes one, ``debugprims::load_tensor`` reads one — and a scripted model could use them to return
another file's bytes to callers or to write outside the repository. Two checks, both before the model
serves:

1. :func:`check_archive` reads the archive's code files (plain text in the zip) *before*
   ``torch.jit.load``, because loading runs a module's ``__setstate__``, which may call these
   operators. It is a conservative text check: a name that merely looks like one of them is refused.
2. :func:`check_module` walks every method of the loaded module and all its submodules (graphs
   inlined, nested blocks and forked subgraphs included) for nodes of those operators.

What this does not do: make TorchScript harmless. A model can still use as much memory and CPU as it
likes, or print to the server's output; docs/engines.md says so.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: operators that read or write files (found by searching every registered schema for a
#: file name, path or storage argument)
FILE_OPERATORS = frozenset({"aten::from_file", "aten::save", "debugprims::load_tensor"})

#: the same operators as they appear in an archive's serialised code (``torch.from_file(...)``,
#: ``ops.aten.save(...)``, ``ops.debugprims.load_tensor(...)``)
_CODE_PATTERN = re.compile(
    r"\bfrom_file\b|\bload_tensor\b|\bdebugprims\b|(?:\btorch|\baten)\s*\.\s*save\b|(?<![\w.])(?<!def )save\s*\("
)
#: the largest code file read from an archive (TorchScript code is small; weights are not code)
_MAX_CODE_BYTES = 64 * 1024 * 1024


class FileAccess(Exception):
    """The archive's code uses an operator that reads or writes files; the message names it."""


def _code_entries(archive: zipfile.ZipFile) -> Iterator[zipfile.ZipInfo]:
    """The code files of a TorchScript archive: ``<name>/code/**/*.py`` (every entry of that name, even
    duplicated ones, so a zip that repeats a name cannot hide one copy)."""
    for info in archive.infolist():
        parts = info.filename.split("/")
        if "code" in parts[:-1] and info.filename.endswith(".py"):
            yield info


def check_archive(path: Path) -> None:
    """Refuse an archive whose serialised code mentions a file operator (see the module docstring).

    A file that is not a zip is left to ``torch.jit.load`` to refuse.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return
    with archive:
        for info in _code_entries(archive):
            if info.file_size > _MAX_CODE_BYTES:
                raise FileAccess(f"code file {info.filename} is {info.file_size} bytes; refused")
            text = archive.read(info).decode("utf-8", "replace")
            found = _CODE_PATTERN.search(text)
            if found is not None:
                line = text.count("\n", 0, found.start()) + 1
                raise FileAccess(
                    f"its code uses {found.group(0).rstrip('(').strip()!r} ({info.filename}, line {line}), "
                    "an operator that reads or writes files"
                )


def check_module(module: Any) -> None:
    """Refuse a loaded ScriptModule any of whose methods (in any submodule) calls a file operator."""
    for owner, method in _methods(module):
        graph = method.graph.copy()
        _inline(graph)
        for kind in _node_kinds(graph.block()):
            if kind in FILE_OPERATORS:
                raise FileAccess(f"{owner}.{method.name} calls {kind}, an operator that reads or writes files")


def _methods(module: Any) -> Iterator[tuple[str, Any]]:
    for prefix, submodule in module.named_modules():
        c_module = getattr(submodule, "_c", None)
        if c_module is None:
            continue
        owner = prefix or "model"
        for name in c_module._method_names():
            yield owner, c_module._get_method(name)


def _inline(graph: Any) -> None:
    import torch

    torch._C._jit_pass_inline(graph)


def _node_kinds(block: Any, depth: int = 0) -> Iterator[str]:
    """Every node kind in ``block``, its nested blocks (if, loop) and subgraph attributes (fork)."""
    if depth > 256:
        raise FileAccess("its graphs nest deeper than 256 levels")
    for node in block.nodes():
        yield node.kind()
        for inner in node.blocks():
            yield from _node_kinds(inner, depth + 1)
        if node.hasAttribute("Subgraph"):
            subgraph = node.g("Subgraph").copy()
            _inline(subgraph)
            yield from _node_kinds(subgraph.block(), depth + 1)
