"""phone_code: the newer getPhoneNumber flow (base library 2.21.2+).

The mini program sends the button's one-time phone ``code``; the gateway exchanges it
at getuserphonenumber with the app's access token (shared by every process through
storage, refreshed once when WeChat rejects it). The answer's ``phone_info`` becomes
``ctx.data``, watermark included, so ``watermark``/``mask_guard``/``respond`` apply.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from gateway import Context, Step, StepOptions
from wxgate_plugins.steps.codes import read_code


class PhoneCodeOptions(StepOptions):
    bind_openid: bool = Field(True, description="Send the session's openid so WeChat checks the code is theirs.")


class PhoneCode(Step[PhoneCodeOptions]):
    name: ClassVar[str] = "phone_code"
    gives = ("phone",)
    single_use = True  # the code is redeemed at WeChat

    async def __call__(self, ctx: Context) -> None:
        code = read_code(ctx, "getPhoneNumber", hint="Send e.detail.code unchanged.")
        openid = ctx.session.openid if ctx.session is not None and self.options.bind_openid else None
        ctx.data = await ctx.wechat.get_phone_number(code, openid)
