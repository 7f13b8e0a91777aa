"""revoke_session: end the session of the bearer token (``POST /logout``), answer 204.

The token's record is deleted from the storage, which every process and host reads on
each request, so the token is refused everywhere at once. Runs after
``check_session``: a second logout with the same token is a 401. Steps after it (a
webhook, say) still run; the answer has no body.
"""

from __future__ import annotations

from typing import ClassVar

from gateway import Context, Step, StepOptions
from gateway.errors import SessionInvalid
from gateway.wechat.crypto import token_hash


class RevokeSession(Step[StepOptions]):
    name: ClassVar[str] = "revoke_session"
    needs = ("session",)
    gives = ()

    async def __call__(self, ctx: Context) -> None:
        if ctx.token is None:
            raise SessionInvalid(log_detail="revoke_session without a token")
        if not await ctx.storage.delete_login_session(token_hash(ctx.token)):
            # a concurrent logout won the race; the outcome is the same as a second call's
            raise SessionInvalid(log_detail="the session was revoked meanwhile")
        ctx.status = 204
        ctx.response.clear()
