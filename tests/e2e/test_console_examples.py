"""Every ```console example in the README and docs/ either runs against the real server or says why not.

A console block is ``$ command`` lines, each followed by the output the docs promise. The test runs each
command (``127.0.0.1:8001`` replaced by the test server's address, stdout then stderr) and compares:

- by default **exactly**, line by line (trailing spaces ignored), after one normalisation: a request
  id the server made (8 hex digits, ``-``, a hex counter: ``"id": "3a671b91-4"``) matches any other;
- after ``<!-- check: json -->`` on the line before the fence: the output is a sequence of JSON
  documents (grpcurl's), which the docs may lay out compactly; equal once parsed (ids normalised);
- after ``<!-- check: shape -->``, for outputs whose numbers vary (counters, timings): the same number
  of lines, the first (the column header) word for word, and every other line's words up to its first
  number.

A block that cannot run here (a foreground server, ``make bench``, TensorRT, a model the example
repository lacks, a command that never ends) carries ``<!-- not-run: REASON -->`` on the line before
the fence; a block with neither a marker nor a ``$`` command fails the test. How to write one:
docs/operations.md "Examples in the docs are tested".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.server_process import REPO_ROOT, ServerProcess
from tests.e2e.test_readme_commands import DOCUMENTS, json_documents, run_shell

pytestmark = pytest.mark.e2e

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*(not-run|check):\s*(.*?)\s*-->$")
#: the ids server/api/codec.py RequestIds makes, as docs/protocol.md describes them
_REQUEST_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]+\b")
CHECK_MODES = ("json", "shape")
_NUMBER = re.compile(r"\d")


@dataclass(frozen=True)
class ConsoleBlock:
    """One ```console block: where it is, its marker and its lines."""

    path: Path
    line: int  # of the opening fence
    marker: tuple[str, str] | None  # ("not-run", reason) or ("check", mode)
    lines: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"

    def examples(self) -> list[tuple[str, list[str]]]:
        """(command, expected output lines) for each ``$ `` line of the block."""
        found: list[tuple[str, list[str]]] = []
        for text in self.lines:
            if text.startswith("$ "):
                found.append((text[2:].strip(), []))
            elif found:
                found[-1][1].append(text.rstrip())
        return found


def console_blocks(path: Path) -> list[ConsoleBlock]:
    blocks: list[ConsoleBlock] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index].strip())
        if not fence:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not _FENCE.match(lines[end].strip()):
            end += 1
        if fence.group(1) == "console":
            before = next((text.strip() for text in reversed(lines[:index]) if text.strip()), "")
            marker = _MARKER.match(before)
            blocks.append(
                ConsoleBlock(
                    path,
                    index + 1,
                    (marker.group(1), marker.group(2)) if marker else None,
                    tuple(lines[index + 1 : end]),
                )
            )
        index = end + 1
    return blocks


BLOCKS = [block for path in DOCUMENTS for block in console_blocks(path)]
CHECKED = [
    pytest.param(block, command, expected, id=f"{block.where}:{command[:40]}")
    for block in BLOCKS
    if block.marker is None or block.marker[0] == "check"
    for command, expected in block.examples()
]


def test_every_console_block_is_checked_or_opted_out_with_a_reason() -> None:
    unchecked = []
    for block in BLOCKS:
        if block.marker is None:
            if not block.examples():
                unchecked.append(f"{block.where}: no '$ ' command and no <!-- not-run: REASON --> marker")
        elif block.marker[0] == "not-run" and not block.marker[1]:
            unchecked.append(f"{block.where}: <!-- not-run: --> without a reason")
        elif block.marker[0] == "check" and block.marker[1] not in CHECK_MODES:
            unchecked.append(f"{block.where}: unknown check mode '{block.marker[1]}' (known: {CHECK_MODES})")
        elif block.marker[0] == "check" and not block.examples():
            unchecked.append(f"{block.where}: <!-- check: --> on a block without '$ ' commands")
    assert not unchecked, "\n".join(unchecked)
    assert len(CHECKED) >= 4, "the docs' console examples with outputs are checked"


def normalise(lines: list[str]) -> list[str]:
    return [_REQUEST_ID.sub("<request-id>", line.rstrip()) for line in lines]


def shape_of(line: str) -> str:
    """The words of a line up to the first one holding a digit (the part that does not vary)."""
    words: list[str] = []
    for word in line.split():
        if _NUMBER.search(word):
            break
        words.append(word)
    return " ".join(words)


def assert_output_matches(mode: str | None, expected: list[str], actual: list[str], context: str) -> None:
    if mode == "shape":
        assert len(actual) == len(expected), f"{context}: {len(actual)} lines, documented {len(expected)}"
        assert [line.split() for line in actual[:1]] == [line.split() for line in expected[:1]], f"{context}: header"
        assert [shape_of(a) for a in actual[1:]] == [shape_of(e) for e in expected[1:]], context
    elif mode == "json":
        parsed = json_documents("\n".join(normalise(actual)))
        assert parsed == json_documents("\n".join(normalise(expected))), context
    else:
        assert normalise(actual) == normalise(expected), context


@pytest.fixture(scope="module")
def served_once(inferd_server: ServerProcess) -> ServerProcess:
    """Every example model has answered at least once, so statistics show their batch and stream lines."""
    from inferd import Client

    with Client(inferd_server.address, timeout=30) as client:
        client.wait_until_ready(timeout=30)
        client.predict("mlp_ranker", {"features": np.zeros((1, 256), np.float32)})
        for _ in client.predict_stream("tiny_lm", {"prompt": np.array([b"The "], dtype=object)}):
            pass
    return inferd_server


@pytest.mark.parametrize(("block", "command", "expected"), CHECKED)
def test_documented_console_output_is_what_the_server_prints(
    block: ConsoleBlock, command: str, expected: list[str], served_once: ServerProcess, tmp_path: Path
) -> None:
    result = run_shell(command, served_once, cwd=REPO_ROOT)
    actual: list[Any] = (result.stdout + result.stderr).rstrip("\n").splitlines()
    mode = block.marker[1] if block.marker else None
    context = f"{block.where} `{command}`\nprinted:\n" + "\n".join(actual)
    assert_output_matches(mode, expected, [line.rstrip() for line in actual], context)


def test_the_request_ids_in_the_docs_have_the_format_the_server_makes(served_once: ServerProcess) -> None:
    from inferd import Client

    with Client(served_once.address, timeout=30) as client:
        made = client.predict_response("mlp_ranker", {"features": np.zeros((1, 256), np.float32)}).id
    assert _REQUEST_ID.fullmatch(made), f"the server made request id {made!r}; docs/protocol.md describes another"
    protocol = (REPO_ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    documented = re.findall(r"request id ([^)\s]+)\)", protocol) + re.findall(
        r"^\| `id` \|.*\(`([^`]+)`\)", protocol, re.M
    )
    assert len(documented) >= 2, "docs/protocol.md shows the id format (the `id` field and INTERNAL's message)"
    for example in documented:
        assert _REQUEST_ID.fullmatch(example), (
            f"docs/protocol.md shows request id {example!r}; the server makes {made!r}"
        )


@pytest.mark.parametrize(
    ("mode", "expected", "actual"),
    [
        (None, ['{"id": "3a671b91-4", "token": "115"}'], ['{"id": "77aa01ff-1f", "token": "32"}']),
        ("json", ['{"id": "3a671b91-4", "token": "115"}'], ["{", '  "id": "3a671b91-4",', '  "token": "32"', "}"]),
        ("shape", ["MODEL  OK", "a 1"], ["MODEL OK", "b 1"]),
        ("shape", ["MODEL  OK", "a 1"], ["MODEL OK", "a 1", "a v1 1:1"]),
    ],
)
def test_a_documented_output_that_differs_from_the_real_one_fails(
    mode: str | None, expected: list[str], actual: list[str]
) -> None:
    with pytest.raises(AssertionError):
        assert_output_matches(mode, expected, actual, "example")


def test_varying_request_ids_layout_and_numbers_are_tolerated_where_documented() -> None:
    assert_output_matches(None, ["request id 3a671b91-2a"], ["request id 0badcafe-1"], "ids")
    assert_output_matches(
        "json", ['{"id": "3a671b91-4", "n": ["1"]}'], ["{", '  "n": ["1"],', '  "id": "00ff00ff-9"', "}"], "json"
    )
    assert_output_matches("shape", ["MODEL  OK  FAILED", "m  1  5 {'X': 5}"], ["MODEL OK FAILED", "m 7 0"], "shape")
