"""phone_code: the newer getPhoneNumber flow (base library 2.21.2+).

The mini program sends the button's one-time phone ``code``; the gateway exchanges it
at getuserphonenumber with the app's access token (shared by every process through
storage, refreshed once when WeChat rejects it). The answer's ``phone_info`` becomes
``ctx.data``, watermark included, so ``watermark``/``mask_guard``/``respond`` apply.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field

from gateway import Context, Step, StepOptions
from gateway.errors import InvalidField, MissingField

_CODE = re.compile(r"[A-Za-z0-9_-]{1,128}")


class PhoneCodeOptions(StepOptions):
    bind_openid: bool = Field(True, description="Send the session's openid so WeChat checks the code is theirs.")


class PhoneCode(Step[PhoneCodeOptions]):
    name: ClassVar[str] = "phone_code"
    version: ClassVar[str] = "1.0.0"
    Options: ClassVar[type[StepOptions]] = PhoneCodeOptions

    async def __call__(self, ctx: Context) -> None:
        code = ctx.fields.get("code")
        if not code:
            raise MissingField("code is required: the phone code from getPhoneNumber.")
        if not _CODE.fullmatch(code):
            raise InvalidField("code is not a getPhoneNumber code.", hint="Send e.detail.code unchanged.")
        openid = ctx.session.openid if ctx.session is not None and self.options.bind_openid else None
        ctx.data = await ctx.wechat.get_phone_number(code, openid)
