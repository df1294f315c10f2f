"""What an error message may show a client: short escaped echoes, short lists, no local paths."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from server.core.echo import bounded, echo, listing, public
from server.core.errors import NotFound
from server.models.registry import ModelEntry, Registry
from server.models.repository import Repository, RepositoryError


def test_echo_quotes_short_values_as_they_are():
    assert echo("resnet") == "'resnet'"


def test_echo_escapes_control_characters_and_newlines():
    assert echo("a\nb\x00\u202e") == "'a\\nb\\x00\\u202e'"


def test_echo_cuts_long_values_to_a_prefix_and_says_how_long_they_were():
    shown = echo("x" * 20_000)
    assert shown == "'" + "x" * 64 + "'… (20000 characters)"


def test_echo_of_escapes_stays_short():
    assert len(echo("\x00" * 20_000)) < 64 * 4 + 40


def test_listing_names_a_few_then_counts_the_rest():
    assert listing(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"
    assert listing(["a", "b"]) == "a, b"
    assert listing([]) == "none"


def test_public_makes_repository_paths_relative_and_hides_other_absolute_paths(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    text = (
        f"{root}/resnet/1/model.onnx: bad; {root}; {root}2/x; "
        "File /usr/lib/python3/site.py, line 3; see a/b/c and ./d/e"
    )
    shown = public(text, root)
    assert shown == "resnet/1/model.onnx: bad; .; …/x; File …/site.py, line 3; see a/b/c and ./d/e"


def test_public_also_bounds_the_length():
    assert len(public("y" * 100_000)) < 2100


def test_bounded_says_how_much_was_cut():
    assert bounded("z" * 30, 10) == "z" * 10 + "… (20 more characters)"


def _registry_with(names: list[str]) -> Registry:
    registry = Registry()
    for name in names:
        asyncio.run(registry.publish(ModelEntry.of(name, None, {}, labels={"stable": 1, "canary": 2})))
    return registry


def test_unknown_model_message_is_short_and_lists_a_few_models():
    registry = _registry_with([f"model{i}" for i in range(20)])
    with pytest.raises(NotFound) as err:
        registry.entry("q" * 20_000)
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert len(err.value.message) < 200
    assert "(models: model0, model1, model10 and 17 more)" in err.value.message


def test_unknown_label_message_escapes_the_label():
    registry = _registry_with(["m"])
    with pytest.raises(NotFound) as err:
        registry.route("m", label="evil\nlabel" + "!" * 10_000)
    assert "\n" not in err.value.message
    assert "'evil\\nlabel" in err.value.message and len(err.value.message) < 250


def test_repository_refuses_names_with_a_trailing_newline(tmp_path: Path):
    repository = Repository(tmp_path)
    assert repository.model_dir("resnet") == tmp_path.resolve() / "resnet"
    for name in ("resnet\n", "resnet\r\n", "../etc", "", "a" * 129, ".hidden"):
        with pytest.raises(RepositoryError):
            repository.model_dir(name)


def test_repository_error_for_a_long_name_is_short(tmp_path: Path):
    with pytest.raises(RepositoryError) as err:
        Repository(tmp_path).model_dir("n" * 20_000 + "\n")
    assert len(str(err.value)) < 200
