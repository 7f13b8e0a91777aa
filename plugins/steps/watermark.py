"""watermark: the decrypted data must be for this app, and recent if max_age is set."""

from __future__ import annotations

import time
from typing import ClassVar

from pydantic import Field

from gateway import Context, Step, StepOptions
from gateway.errors import UnexpectedPayload, WatermarkExpired, WatermarkMismatch


class WatermarkOptions(StepOptions):
    max_age: int | None = Field(None, gt=0, description="Refuse data older than this many seconds.")
    max_skew: int = Field(300, ge=0, description="Tolerated seconds of a timestamp in the future.")


class Watermark(Step[WatermarkOptions]):
    name: ClassVar[str] = "watermark"
    version: ClassVar[str] = "1.0.0"
    Options: ClassVar[type[StepOptions]] = WatermarkOptions

    async def __call__(self, ctx: Context) -> None:
        mark = ctx.data.get("watermark")
        if not isinstance(mark, dict):
            raise UnexpectedPayload("The decrypted data has no watermark.")
        if mark.get("appid") != ctx.app.appid:
            raise WatermarkMismatch(log_detail=f"watermark appid {mark.get('appid')!r}")
        stamp = mark.get("timestamp")
        if not isinstance(stamp, int | float) or isinstance(stamp, bool):
            raise UnexpectedPayload("The decrypted data's watermark has no timestamp.")
        now = time.time()
        if stamp > now + self.options.max_skew:
            raise WatermarkExpired(log_detail=f"watermark {now - stamp:.0f}s in the future")
        if self.options.max_age is not None and now - stamp > self.options.max_age:
            raise WatermarkExpired(
                f"The data's watermark is {int(now - stamp)}s old; this app accepts {self.options.max_age}s."
            )
