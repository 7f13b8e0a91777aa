"""code2session: exchange the wx.login code for openid, unionid and session_key."""

from __future__ import annotations

import time
from typing import ClassVar

from gateway import Context, Secret, Session, Step, StepOptions
from wxgate_plugins.steps.codes import read_code


class Code2Session(Step[StepOptions]):
    """Reads the ``code`` field; records the session_key (the former one is kept as previous).

    The keys live in the user's record, so recording them is recording the login too: the
    same write creates or refreshes the user as ``persist_user`` would (``ctx.outcome.user``),
    and a ``persist_user`` after it sends nothing more."""

    name: ClassVar[str] = "code2session"
    gives = ("session",)
    single_use = True  # the code is redeemed at WeChat

    async def __call__(self, ctx: Context) -> None:
        code = read_code(ctx, "wx.login", hint="Send the code from wx.login unchanged.")
        answer = await ctx.wechat.code2session(code)
        unionid = answer.get("unionid") if isinstance(answer.get("unionid"), str) else None
        keys, user = await ctx.storage.login_user(
            ctx.app.appid, answer["openid"], unionid, answer["session_key"], time.time()
        )
        ctx.outcome.user = user
        ctx.session = Session(
            openid=keys.openid,
            unionid=keys.unionid,
            session_key=Secret(keys.session_key),
            previous_session_key=Secret(keys.previous_session_key) if keys.previous_session_key else None,
        )
