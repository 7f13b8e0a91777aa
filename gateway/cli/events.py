"""``wxgate events list|retry|purge``: inspect and repair the webhook outbox of a shared storage."""

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
from gateway.storage import EVENT_STATUSES, Storage

# Only finished events may be purged: deleting a pending one would lose a delivery.
_PURGEABLE = ("delivered", "dead")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_events(sub: Subcommands) -> None:
    events = sub.add_parser("events", help="inspect and repair the webhook outbox")
    add_file_options(events)  # `wxgate events --config FILE list`, as before the action was named
    actions = events.add_subparsers(dest="action", required=True)
    listing = add_command(actions, "list", _events, help="list events, newest last")
    listing.add_argument("--status", choices=EVENT_STATUSES, help="only events in this state")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    retry = add_command(actions, "retry", _events, help="put dead-lettered events back in the queue")
    retry.add_argument("ids", nargs="*", help="event ids as listed (default: none; see --all)")
    retry.add_argument("--all", action="store_true", help="every dead-lettered event")
    purge = add_command(actions, "purge", _events, help="delete delivered or dead events older than a given age")
    purge.add_argument("--status", choices=_PURGEABLE, required=True)
    purge.add_argument("--older-than", required=True, help="age such as 30s, 15m, 12h or 7d")


def _events(args: argparse.Namespace) -> int:
    # the storage is all it uses: the apps' secrets need not be in this shell's environment
    config = load_for(args, sections=("server", "storage"))
    require_shared_storage(config)
    if args.action == "retry" and not args.ids and not args.all:
        raise CLIError("name event ids, or --all", USAGE_ERROR)
    older_than = time.time() - _age_seconds(args.older_than) if args.action == "purge" else 0.0
    storage = config.storage_cls(config.storage_options)
    try:
        return asyncio.run(_act(storage, args, older_than))
    except GatewayError as exc:  # named here, so that "storage unreachable" says which command met it
        raise CLIError(describe(exc), RUNTIME_FAILURE) from exc


async def _act(storage: Storage, args: argparse.Namespace, older_than: float) -> int:
    await storage.start()
    try:
        if args.action == "list":
            for event in await storage.list_events(args.status, args.limit):
                row = {
                    "id": event.id,
                    "type": event.type,
                    "endpoint": event.endpoint,
                    "status": event.status,
                    "attempts": event.attempts,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event.created_at)),
                    "last_error": event.last_error,
                }
                print(json.dumps(row) if args.json else "  ".join(_cell(v) for v in row.values()))
        elif args.action == "retry":
            named = None if args.all else list(dict.fromkeys(args.ids))
            count = await storage.requeue_events(named, time.time())
            print(f"{count} dead-lettered events queued again")
            if named is not None and count < len(named):
                # a script retrying an id must learn that nothing happened to it (a typo, or
                # an event already queued again or delivered)
                print(
                    f"{args.prog}: {len(named) - count} of the {len(named)} named events were not queued again "
                    "(an unknown id, or an event that is not a dead letter); `wxgate events list` shows each "
                    "event's status",
                    file=sys.stderr,
                )
                return RUNTIME_FAILURE
        else:
            count = await storage.purge_events(args.status, older_than)
            print(f"{count} {args.status} events purged")
    finally:
        await storage.close()
    return 0


def _cell(value: object) -> str:
    """A column of the text listing: an empty field (no error yet) shows as ``-``."""
    return "-" if value is None or value == "" else str(value)


def _age_seconds(text: str) -> float:
    if len(text) < 2 or text[-1] not in _UNITS or not text[:-1].isdigit():
        raise CLIError(f"--older-than {text!r}: expected a number and a unit, such as 30s, 15m, 12h or 7d", USAGE_ERROR)
    return int(text[:-1]) * _UNITS[text[-1]]
