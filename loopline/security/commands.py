"""``loopline token add|revoke|list``: the gRPC bearer tokens in ``serving.tokens_file``.

A running server re-reads the file within a second of a change, so adding
or revoking a token takes effect without a restart. The token itself is
printed once, by ``add``; the file keeps only its digest.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import Settings
from loopline.security.tokens import ROLES, add_token, parse_tokens, revoke_token


def register(subparsers: Any) -> None:
    token = subparsers.add_parser(
        "token", help="add, revoke or list gRPC bearer tokens", description=__doc__
    )
    actions = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create a token for a client (shown once)")
    add.add_argument("name", help="the client's name (one word), e.g. fraud-api")
    add.add_argument(
        "--roles",
        required=True,
        help=f"comma-separated, from {', '.join(ROLES)} (admin may call everything)",
    )
    add.set_defaults(func=_add)
    revoke = actions.add_parser("revoke", help="remove a client's token")
    revoke.add_argument("name")
    revoke.set_defaults(func=_revoke)
    listing = actions.add_parser("list", help="the token names and their roles")
    listing.set_defaults(func=_list)
    for parser in (add, revoke, listing):
        parser.add_argument(
            "--file", type=Path, help="the tokens file (default: serving.tokens_file)"
        )


def tokens_path(args: argparse.Namespace) -> Path:
    if args.file is not None:
        return Path(args.file)
    settings: Settings | None = getattr(args, "settings", None)
    if settings is None or settings.serving.tokens_file is None:
        raise ConfigError("no tokens file: pass --file PATH or set serving.tokens_file")
    return Path(settings.serving.tokens_file)


def _add(args: argparse.Namespace) -> int:
    path = tokens_path(args)
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        token = add_token(path, args.name, roles)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write the tokens file ({e.strerror})") from None
    print(f"added token {args.name!r} (roles {','.join(roles)}) to {path}")
    print("the token (shown only now; the file keeps its digest):")
    print(token)
    print("clients send it as the metadata 'authorization: Bearer <token>'")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    path = tokens_path(args)
    try:
        revoked = revoke_token(path, args.name)
    except OSError as e:
        raise ConfigError(f"{path}: cannot rewrite the tokens file ({e.strerror})") from None
    if not revoked:
        known = ", ".join(e.name for e in _entries(path)) or "none"
        raise ConfigError(f"{path}: no token named {args.name!r} (known: {known})")
    print(f"revoked token {args.name!r} in {path}; servers refuse it within a second")
    return 0


def _list(args: argparse.Namespace) -> int:
    path = tokens_path(args)
    entries = _entries(path)
    if not entries:
        print(f"no tokens in {path}; add one with `loopline token add NAME --roles ROLES`")
    for entry in entries:
        print(f"{entry.name}\t{','.join(r for r in ROLES if r in entry.roles)}")
    return 0


def _entries(path: Path) -> list[Any]:
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the tokens file ({e.strerror})") from None
    return parse_tokens(text, str(path))
