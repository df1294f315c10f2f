"""protos/inference/v2 is wire compatible with Triton's own descriptors, as tritonclient[grpc] ships them.

Both sides are dumped by tests/oip/dump_descriptors.py (tritonclient's in its own venv: the two cannot
share a process) and compared field by field: number, type, repeated, and message/enum type.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.e2e.server_process import REPO_ROOT
from tests.e2e.tritonclient_venv import ensure_venv

pytestmark = pytest.mark.e2e
SCRIPT = REPO_ROOT / "tests" / "oip" / "dump_descriptors.py"


def _dump(python: str, *args: str) -> dict[str, Any]:
    done = subprocess.run([python, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def descriptors() -> tuple[dict[str, Any], dict[str, Any]]:
    return _dump(sys.executable, "--inferd"), _dump(str(ensure_venv()))


def test_every_message_inferd_defines_matches_tritons_field_for_field(descriptors: tuple[dict, dict]) -> None:
    ours, theirs = descriptors
    mismatches = []
    for message, fields in ours["messages"].items():
        if message not in theirs["messages"]:
            mismatches.append(f"{message}: not in Triton's protos")
            continue
        for name, shape in fields.items():
            if theirs["messages"][message].get(name) != shape:
                mismatches.append(f"{message}.{name}: ours {shape}, Triton's {theirs['messages'][message].get(name)}")
    assert not mismatches, "\n".join(mismatches)


def test_every_message_of_the_service_is_defined_complete(descriptors: tuple[dict, dict]) -> None:
    """Every request/response message of GRPCInferenceService has all of Triton's fields (not a subset)."""
    ours, theirs = descriptors
    incomplete = []
    for method in theirs["methods"].values():
        for message in method[:2]:
            missing = set(theirs["messages"][message]) - set(ours["messages"].get(message, {}))
            if missing:
                incomplete.append(f"{message}: {sorted(missing)}")
    assert not incomplete, "\n".join(incomplete)


def test_the_service_has_tritons_methods_with_the_same_types_and_streaming(descriptors: tuple[dict, dict]) -> None:
    ours, theirs = descriptors
    assert ours["methods"] == theirs["methods"]


def test_enums_inferd_defines_have_tritons_values(descriptors: tuple[dict, dict]) -> None:
    ours, theirs = descriptors
    for enum, values in ours["enums"].items():
        assert theirs["enums"].get(enum) == values, enum
