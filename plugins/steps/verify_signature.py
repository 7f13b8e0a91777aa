"""verify_signature: rawData must be signed as sha1(rawData + session_key)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from gateway import Context, Step, StepOptions
from gateway.errors import MissingField, SignatureMismatch
from gateway.wechat.crypto import constant_time_equal, rawdata_signature


class VerifySignatureOptions(StepOptions):
    required: bool = Field(False, description="Refuse requests without rawData and signature.")


class VerifySignature(Step[VerifySignatureOptions]):
    name: ClassVar[str] = "verify_signature"
    needs = ("session",)
    gives = ()

    async def __call__(self, ctx: Context) -> None:
        raw, signature = ctx.fields.get("rawData"), ctx.fields.get("signature")
        if raw is None and signature is None and not self.options.required:
            return
        if raw is None or signature is None:
            raise MissingField("rawData and signature must be sent together.")
        session = ctx.require_session()
        keys = [session.session_key, session.previous_session_key]
        for key in keys:
            if key is not None and constant_time_equal(rawdata_signature(raw, key.reveal()), signature.lower()):
                return
        raise SignatureMismatch()
