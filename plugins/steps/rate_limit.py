"""rate_limit: at most ``limit`` requests per ``window`` seconds per client IP or per user.

Counted in storage (fixed windows), so every gateway process shares the count. Put
``per: ip`` first in a flow (it needs nothing), ``per: openid`` after the step that
establishes the user (code2session or check_session). Refused requests get 429 with
Retry-After: the seconds until the window ends.
"""

from __future__ import annotations

import math
import time
from typing import ClassVar, Literal

from pydantic import Field

from gateway import Context, Step, StepOptions
from gateway.errors import RateLimited
from gateway.step import Fact


class RateLimitOptions(StepOptions):
    per: Literal["ip", "openid"] = Field(description="Count per client address, or per user.")
    limit: int = Field(ge=1, description="Requests allowed in one window.")
    window: int = Field(60, ge=1, le=86_400, description="Window length in seconds.")


class RateLimit(Step[RateLimitOptions]):
    name: ClassVar[str] = "rate_limit"
    gives = ()

    @classmethod
    def needs_for(cls, options: RateLimitOptions) -> tuple[Fact, ...]:
        return ("session",) if options.per == "openid" else ()

    async def __call__(self, ctx: Context) -> None:
        per, window = self.options.per, self.options.window
        who = ctx.client_ip if per == "ip" else ctx.require_session().openid
        now = time.time()
        index = int(now // window)
        ends = (index + 1) * window
        key = f"rl:{ctx.app.appid}:{ctx.flow}:{per}:{window}:{who}:{index}"
        if await ctx.storage.incr_counter(key, ends + 5) > self.options.limit:
            ctx.outcome.rate_limited = per
            raise RateLimited(
                f"Too many requests from this {'address' if per == 'ip' else 'user'}.",
                retry_after=max(1, math.ceil(ends - now)),
            )
