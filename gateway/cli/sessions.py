"""``wxgate sessions list|revoke``: see and end users' login sessions in a shared storage.

Revoking deletes the session records, which every gateway process reads on each request
(none caches sessions), so a revoked token is refused everywhere from its next request on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from gateway.cli.base import (
    RUNTIME_FAILURE,
    USAGE_ERROR,
    CLIError,
    Subcommands,
    add_command,
    add_file_options,
    describe,
    load_for,
    require_shared_storage,
)
from gateway.errors import GatewayError
from gateway.logs import configure_logging
from gateway.storage import Storage
from gateway.wechat.crypto import token_hash

# Hex digits of a token's hash shown: enough to tell one user's sessions apart.
SHOWN_HASH = 12


def add_sessions(sub: Subcommands) -> None:
    sessions = sub.add_parser("sessions", help="list or revoke users' login sessions")
    add_file_options(sessions)  # `wxgate sessions --config FILE list ...`
    actions = sessions.add_subparsers(dest="action", required=True)
    listing = add_command(actions, "list", _sessions, help="a user's live sessions, oldest first (never a token)")
    _common(listing)
    listing.add_argument("--openid", required=True, help="the user")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    revoke = add_command(actions, "revoke", _sessions, help="end one token, or every token of a user, at once")
    _common(revoke)
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--openid", help="every session of this user")
    which.add_argument(
        "--token",
        help="this one token, as --token=TOKEN (a token may start with '-'); --token - reads it from standard input, "
        "which keeps it out of the process list",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", required=True, help="the app's name in the configuration (not its appid)")


def _sessions(args: argparse.Namespace) -> int:
    # the apps for their appids, and the storage; webhooks, pipelines and the apps' secrets
    # are not read, so the shell that runs this need not hold them
    config = load_for(
        args, sections=("server", "storage", "apps"), unread=(("apps", "*", "secret"), ("apps", "*", "pipelines"))
    )
    require_shared_storage(config)
    app = config.apps.get(args.app)
    if app is None:
        raise CLIError(f"no app {args.app!r} in {config.path}; its apps: {', '.join(sorted(config.apps))}", USAGE_ERROR)
    token = None
    if args.action == "revoke" and args.token is not None:
        token = sys.stdin.readline().strip() if args.token == "-" else args.token
        if not token:
            raise CLIError("--token: the token is empty", USAGE_ERROR)
    # the storage's warnings (a rejected record) go to stderr, away from the listing
    configure_logging(config.server.log_format, stream=sys.stderr)
    storage = config.storage_cls(config.storage_options)
    try:
        asyncio.run(_act(storage, args, app.appid, token))
    except GatewayError as exc:  # named here, so that "storage unreachable" says which command met it
        raise CLIError(describe(exc), RUNTIME_FAILURE) from exc
    return 0


async def _act(storage: Storage, args: argparse.Namespace, appid: str, token: str | None) -> None:
    await storage.start()
    try:
        if args.action == "list":
            for session in await storage.list_login_sessions(appid, args.openid):
                row = {
                    "id": session.token_hash[:SHOWN_HASH],
                    "created": _utc(session.created_at),
                    "expires": _utc(session.expires_at),
                }
                print(json.dumps(row) if args.json else "  ".join(row.values()))
            return
        if token is None:
            count = await storage.delete_login_sessions(appid, args.openid)
        else:
            digest = token_hash(token)
            found = await storage.get_login_session(digest)
            # only a session of the app named: --app scopes what an operator may end
            mine = found is not None and found.appid == appid
            count = int(mine and await storage.delete_login_session(digest))
        print(f"{count} session{'' if count == 1 else 's'} revoked")
    finally:
        await storage.close()


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
