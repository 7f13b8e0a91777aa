"""issue_session: hand the client an opaque login token; store only its hash."""

from __future__ import annotations

import secrets
import time
from typing import ClassVar

from pydantic import Field

from gateway import Context, LoginSession, Step, StepOptions
from gateway.wechat.crypto import token_hash


class IssueSessionOptions(StepOptions):
    ttl: int = Field(7200, ge=60, le=30 * 86400, description="Token lifetime in seconds.")


class IssueSession(Step[IssueSessionOptions]):
    name: ClassVar[str] = "issue_session"
    needs = ("session",)
    gives = ("response",)

    async def __call__(self, ctx: Context) -> None:
        session = ctx.require_session()
        token = secrets.token_urlsafe(32)
        now = time.time()
        await ctx.storage.put_login_session(
            LoginSession(
                token_hash=token_hash(token),
                appid=ctx.app.appid,
                openid=session.openid,
                unionid=session.unionid,
                created_at=now,
                expires_at=now + self.options.ttl,
            )
        )
        ctx.response.update(token=token, openid=session.openid, unionid=session.unionid, expires_in=self.options.ttl)
