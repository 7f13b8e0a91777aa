"""A hook module: counts first logins per app (a stand-in for "send a welcome SMS")."""

from __future__ import annotations

from collections import Counter

from gateway.hookspecs import hookimpl

NEW_USERS: Counter[str] = Counter()


@hookimpl
def wxgate_user_logged_in(app: str, first_login: bool | None) -> None:
    if first_login:
        NEW_USERS[app] += 1
