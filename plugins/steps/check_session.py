"""check_session: the bearer token must name a live session of this app.

It reads the storage on every request (no cache in the process), so a revoked token
is refused at once by every process and host: one read (``Storage.get_login``) for the
session, the user's session keys and latest bound phone. The session it finds is left
in ``ctx.outcome.login`` (a :class:`~gateway.storage.LoginSession`, the phone in its
``bound_phone``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from gateway import Context, Secret, Session, Step, StepOptions
from gateway.errors import SessionExpired, SessionInvalid, Unauthorized
from gateway.wechat.crypto import token_hash


class CheckSessionOptions(StepOptions):
    remote: bool = Field(False, description="Also ask WeChat's checksession API that the key is current.")


class CheckSession(Step[CheckSessionOptions]):
    name: ClassVar[str] = "check_session"
    gives = ("session",)

    async def __call__(self, ctx: Context) -> None:
        if ctx.token is None:
            raise Unauthorized()
        found = await ctx.storage.get_login(token_hash(ctx.token))
        if found is None or found[0].appid != ctx.app.appid:
            raise SessionInvalid()
        login, keys = found
        if login.expired():
            raise SessionExpired()
        ctx.outcome.login = login  # session_info reads it
        if keys is None:
            raise SessionInvalid(log_detail="session without session keys")
        ctx.session = Session(
            openid=login.openid,
            unionid=keys.unionid or login.unionid,
            session_key=Secret(keys.session_key),
            previous_session_key=Secret(keys.previous_session_key) if keys.previous_session_key else None,
        )
        if self.options.remote:
            await ctx.wechat.check_session(login.openid, ctx.session.session_key)
