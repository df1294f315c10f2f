"""What a client may see of strings: bounded echoes of its own values, short lists, no local paths.

Error messages travel in gRPC trailers, which have a hard size limit: a message that echoes a 20 kB
model name is replaced by RESOURCE_EXHAUSTED "metadata size exceeds hard limit", and one that lists
every model or names the repository's absolute path tells any client more than it should know. Every
message built from a client's string goes through :func:`echo`; lists of server-side names through
:func:`listing`; load failures and other server-side texts a client can read through :func:`public`.
The server log keeps the full values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from engines.base import echo as quote

#: characters of a client string echoed in a message (before escaping)
ECHO_CHARS = 64
#: names listed in a message before "and N more"
LIST_NAMES = 3
#: the longest message a client is sent (messages travel in trailers, which have a hard limit)
MESSAGE_CHARS = 2048

#: an absolute POSIX path of two or more components, not part of a word, a relative path or a URL
_ABSOLUTE_PATH = re.compile(r"(?<![\w./~:-])/(?:[^\s/'\"<>:,;()\[\]{}]+/)+[^\s/'\"<>:,;()\[\]{}]*")


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """``value`` quoted, escaped and cut short (engines.base.echo: one implementation for engines and server)."""
    return quote(value, limit)


def listing(names: Iterable[object], limit: int = LIST_NAMES, *, empty: str = "none") -> str:
    """At most ``limit`` names, then how many more: "a, b, c and 12 more"."""
    items = [str(n) for n in names]
    if not items:
        return empty
    shown = ", ".join(items[:limit])
    more = len(items) - limit
    return f"{shown} and {more} more" if more > 0 else shown


def public(text: str, root: Path | None = None, *, limit: int = MESSAGE_CHARS) -> str:
    """``text`` as a client may read it: paths under ``root`` relative to it, other absolute paths cut
    to their last component ("…/name"), and at most ``limit`` characters."""
    if root is not None:
        text = relative_to_root(text, root)
    text = _ABSOLUTE_PATH.sub(_hide_path, text)
    return bounded(text, limit)


def relative_to_root(text: str, root: Path) -> str:
    """Replace ``root`` (as given and resolved) by nothing: "/srv/models/a/1/model.onnx" → "a/1/model.onnx"."""
    for prefix in sorted({str(root), str(root.resolve())}, key=len, reverse=True):
        if prefix and prefix != os.sep:
            text = re.sub(re.escape(prefix) + r"(?:/|(?![\w.\-]))", _root_part, text)
    return text


def _root_part(match: re.Match[str]) -> str:
    return "" if match.group(0).endswith("/") else "."


def bounded(text: str, limit: int = MESSAGE_CHARS) -> str:
    """At most ``limit`` characters, with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def _hide_path(match: re.Match[str]) -> str:
    name = match.group(0).rstrip("/").rsplit("/", 1)[-1]
    return f"…/{name}" if name else "…/"
