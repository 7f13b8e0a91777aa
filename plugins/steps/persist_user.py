"""persist_user: create or refresh the user record (appid + openid, unionid, seen times)."""

from __future__ import annotations

import time
from typing import ClassVar

from gateway import Context, Step, StepOptions


class PersistUser(Step[StepOptions]):
    """Stores the user; ``ctx.state['wxgate.user']`` holds the record (``logins == 1``
    on a first login) for later steps."""

    name: ClassVar[str] = "persist_user"

    async def __call__(self, ctx: Context) -> None:
        session = ctx.require_session()
        user = await ctx.storage.upsert_user(ctx.app.appid, session.openid, session.unionid, time.time())
        ctx.outcome.user = user
