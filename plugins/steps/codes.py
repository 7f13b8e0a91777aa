"""Reading a one-time code (wx.login's or the phone button's) from a request."""

from __future__ import annotations

import re

from gateway import Context
from gateway.errors import InvalidField, MissingField

_CODE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def read_code(ctx: Context, what: str, hint: str) -> str:
    """The ``code`` field, checked for shape before it is sent to WeChat."""
    code = ctx.fields.get("code")
    if not code:
        raise MissingField(f"code is required: the code from {what}.")
    if not _CODE.fullmatch(code):
        raise InvalidField(f"code is not a {what} code.", hint=hint)
    return code
