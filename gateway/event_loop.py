"""Which asyncio event loop a gateway worker runs on (``server.event_loop``).

``auto``, the default, is uvloop when it is installed (a dependency of wxgate on CPython
outside Windows) and the standard library's loop otherwise. A gateway spends much of each
request in the event loop itself (socket reads and writes for the client and for MongoDB,
timers, callbacks); uvloop does that work in C. In bench/phone_vs_baseline.py the
gateway's CPU per ``/phone`` request, as a multiple of the hand-written baseline's on the
standard loop, went from 1.24-1.35 to 1.05-1.21 (bench/RESULTS.md). ``asyncio`` keeps the
standard loop, e.g. to rule the loop out while chasing a problem. Tornado, PyMongo's async
API and Motor run on either.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
T = TypeVar("T")


def uvloop_installed() -> bool:
    """uvloop can be imported here (present but broken counts as missing: ``auto`` then
    falls back to the standard loop rather than failing every worker)."""
    if importlib.util.find_spec("uvloop") is None:
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(choice: EventLoopChoice) -> Literal["uvloop", "asyncio"]:
    """The loop ``choice`` means on this machine."""
    if choice == "auto":
        return "uvloop" if uvloop_installed() else "asyncio"
    return choice


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    if resolve(choice) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: what the running loop is (for the start-up event)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
