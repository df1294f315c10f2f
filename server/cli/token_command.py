"""``inferd token new``: a new bearer token (line 1) and the auth config's ``tokens:`` entry for it.

The token is shown once and stored nowhere; the server keeps only the salted hash (docs/security.md).
"""

from __future__ import annotations

import argparse
import re

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:/-]*")


def _name(text: str) -> str:
    if not _NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a principal name: use letters, digits and . _ @ : / - (e.g. billing-service)"
        )
    return text


def _roles(text: str) -> list[str]:
    roles = list(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    bad = [r for r in roles if not _NAME.fullmatch(r)]
    if bad or not roles:
        raise argparse.ArgumentTypeError(f"give role names separated by commas, e.g. predictor,reader, not {text!r}")
    return roles


def add_parser(sub: argparse._SubParsersAction) -> None:
    token = sub.add_parser("token", help="make bearer tokens for the auth config (--auth-config)")
    actions = token.add_subparsers(dest="token_command", required=True, metavar="ACTION", help="new: make a token")
    new = actions.add_parser(
        "new",
        help="print a new token (line 1) and its hashed tokens: entry for the auth config",
        description="Print a new random token on the first line, then the YAML entry to add under tokens: in the "
        "auth config. Only the salted hash goes in the config; hand the token to the client (e.g. as "
        "INFERD_TOKEN) and keep it nowhere else.",
    )
    new.add_argument("--principal", type=_name, required=True, metavar="NAME", help="who the token is for")
    new.add_argument("--roles", type=_roles, default=[], metavar="A,B", help="roles the token grants (comma-separated)")
    new.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.security.tokens import hash_token, new_token

    token = new_token()
    roles = ", ".join(args.roles)
    print(token)
    print(f'- principal: {args.principal}\n  hash: "{hash_token(token)}"\n  roles: [{roles}]')
    return 0
