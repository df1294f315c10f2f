"""Every flag and argument of every ``inferd`` command says what it does in --help."""

from __future__ import annotations

import argparse

from server.cli.main import build_parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def test_every_argument_of_every_subcommand_has_help() -> None:
    parser = build_parser()
    missing = [
        f"inferd {name} {'/'.join(action.option_strings) or action.dest}"
        for name, sub in _subcommands(parser).items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()
    ]
    assert missing == [], f"arguments without help: {missing}"


def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    described = {choice.dest for choice in sub_action._choices_actions if (choice.help or "").strip()}
    assert set(sub_action.choices) <= described
