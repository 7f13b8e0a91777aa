"""persist_user: create or refresh the user record (appid + openid, unionid, seen times)."""

from __future__ import annotations

import time
from typing import ClassVar

from gateway import Context, Step, StepOptions


class PersistUser(Step[StepOptions]):
    """Stores the user; ``ctx.outcome.user`` holds the record (``logins == 1`` on a first
    login) for later steps. After ``code2session``, which recorded the user with the keys in
    the same write, it sends nothing."""

    name: ClassVar[str] = "persist_user"
    needs = ("session",)
    gives = ()

    async def __call__(self, ctx: Context) -> None:
        session = ctx.require_session()
        done = ctx.outcome.user
        if done is not None and (done.appid, done.openid) == (ctx.app.appid, session.openid):
            return  # recorded in this request already
        user = await ctx.storage.upsert_user(ctx.app.appid, session.openid, session.unionid, time.time())
        ctx.outcome.user = user
