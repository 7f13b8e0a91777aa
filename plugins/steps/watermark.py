"""watermark: the decrypted data must be for this app, and recent if max_age is set."""

from __future__ import annotations

import math
import time
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from gateway import Context, Step, StepOptions
from gateway.errors import Replayed, UnexpectedPayload, WatermarkExpired, WatermarkMismatch
from gateway.request_key import canonical_request_key


class WatermarkOptions(StepOptions):
    max_age: int | None = Field(None, gt=0, description="Refuse data older than this many seconds.")
    max_skew: int = Field(300, ge=0, description="Tolerated seconds of a timestamp in the future.")
    replay: Literal["allow", "reject"] = Field(
        "allow", description="reject: the same encryptedData or cloudID is accepted once within max_age."
    )

    @model_validator(mode="after")
    def _replay_needs_window(self) -> WatermarkOptions:
        if self.replay == "reject" and self.max_age is None:
            raise ValueError("replay: reject needs max_age (it bounds how long replays are remembered)")
        return self


def _timestamp(value: object) -> float:
    """The watermark's time in seconds, or UnexpectedPayload. NaN compares false with
    everything, so it would pass every age check (and then break the replay record's
    expiry); infinities and integers past float range break the arithmetic; a negative
    time is no time WeChat gives."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise UnexpectedPayload("The decrypted data's watermark has no timestamp.")
    try:
        stamp = float(value)
    except OverflowError:
        stamp = math.inf
    if not math.isfinite(stamp) or stamp < 0:
        raise UnexpectedPayload("The decrypted data's watermark timestamp is not a valid time.")
    return stamp


class Watermark(Step[WatermarkOptions]):
    name: ClassVar[str] = "watermark"
    needs = ("data",)
    gives = ()

    def __init__(self, options: WatermarkOptions) -> None:
        super().__init__(options)
        self.single_use = options.replay == "reject"  # accepted data is then spent

    async def __call__(self, ctx: Context) -> None:
        mark = ctx.data.get("watermark")
        if not isinstance(mark, dict):
            raise UnexpectedPayload("The decrypted data has no watermark.")
        if mark.get("appid") != ctx.app.appid:
            raise WatermarkMismatch(log_detail=f"watermark appid {mark.get('appid')!r}")
        stamp = _timestamp(mark.get("timestamp"))
        now = time.time()
        if stamp > now + self.options.max_skew:
            raise WatermarkExpired(log_detail=f"watermark {now - stamp:.0f}s in the future")
        if self.options.max_age is not None and now - stamp > self.options.max_age:
            raise WatermarkExpired(
                f"The data's watermark is {int(now - stamp)}s old; this app accepts {self.options.max_age}s."
            )
        # what the open data came as: encryptedData, or a cloudID (cloud_data), which WeChat
        # answers for again and again until it expires
        data = ctx.fields.get("encryptedData") or ctx.fields.get("cloudID")
        if self.options.replay == "reject" and data and self.options.max_age is not None:
            # remembered until the data would be too old anyway, in storage: every process sees it
            key = f"replay:{canonical_request_key(ctx.app.appid, ctx.fields, ctx.request_id)}"
            if await ctx.storage.incr_counter(key, stamp + self.options.max_age + self.options.max_skew) > 1:
                raise Replayed()
