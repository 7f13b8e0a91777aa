"""session_info: what the client may know about its live session (``GET /session``).

A client checks a stored token with it at launch, and an app hides the phone-number
button for a user whose number it already has: WeChat charges for every successful
use of that button, so asking twice costs money. Runs after ``check_session``.
"""

from __future__ import annotations

import math
import time
from typing import ClassVar

from pydantic import Field

from gateway import Context, Step, StepOptions


class SessionInfoOptions(StepOptions):
    phone: bool = Field(True, description="Include the bound phone's masked form (read with the session).")


class SessionInfo(Step[SessionInfoOptions]):
    name: ClassVar[str] = "session_info"
    needs = ("session",)
    gives = ("response",)

    async def __call__(self, ctx: Context) -> None:
        session = ctx.require_session()
        login = ctx.outcome.login
        if login is None:
            raise TypeError("session_info runs after check_session")  # a pipeline mistake: step_failed
        phone = None
        # the number bound last is the user's current one; check_session read it with the session
        latest = login.bound_phone
        if self.options.phone and latest is not None:
            phone = {"masked": latest.masked, "countryCode": latest.country_code}
        ctx.response.update(
            openid=session.openid,
            unionid=session.unionid,
            expires_in=max(0, math.floor(login.expires_at - time.time())),
            phone=phone,
        )
