"""decrypt: AES-128-CBC open data (phone, user info, share info) with the session key.

Shape errors (bad base64, wrong lengths) are precise; every key-dependent failure is
the same ``decrypt_failed``, so the gateway is no padding oracle. When the current key
fails and the user has a previous one, that one is tried once: the mini program may
have called wx.login (and so replaced the key) after the data was encrypted.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from gateway import Context, Secret, Step, StepOptions
from gateway.errors import DecryptFailed, InvalidEncryptedData, MissingField, UnexpectedPayload
from gateway.step import Fact
from gateway.wechat import crypto

REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "phone": ("phoneNumber", "purePhoneNumber", "countryCode"),
    "userinfo": ("openId",),
    "share": ("openGId",),
    "any": (),
}


OpenDataKind = Literal["phone", "userinfo", "share", "any"]


def facts_of_kind(kind: OpenDataKind) -> tuple[Fact, ...]:
    """What open data of ``kind`` gives the steps after (shared with cloud_data)."""
    return ("data",) if kind == "any" else (kind,)


class DecryptOptions(StepOptions):
    kind: OpenDataKind = Field("any", description="What the plaintext must be; its required keys are checked.")
    try_previous_key: bool = Field(True, description="On failure, try the user's previous session_key once.")


class Decrypt(Step[DecryptOptions]):
    name: ClassVar[str] = "decrypt"
    needs = ("session",)
    gives = ("data",)  # with kind: any; the kind of data with another kind

    @classmethod
    def gives_for(cls, options: DecryptOptions) -> tuple[Fact, ...]:
        return facts_of_kind(options.kind)

    async def __call__(self, ctx: Context) -> None:
        data, iv = ctx.fields.get("encryptedData"), ctx.fields.get("iv")
        if not data:
            raise MissingField("encryptedData is required.")
        if not iv:
            raise MissingField("iv is required.")
        data, iv = crypto.repair_base64(data), crypto.repair_base64(iv)
        session = ctx.require_session()
        keys: list[Secret] = [session.session_key]
        if self.options.try_previous_key and session.previous_session_key is not None:
            keys.append(session.previous_session_key)
        payload = _decrypt_with(keys, iv, data, ctx)
        check_kind(self.options.kind, payload, ctx)
        ctx.data = payload


def check_kind(kind: str, payload: dict[str, Any], ctx: Context) -> None:
    """The open data has the keys of ``kind``, and user info is the session's user's
    (shared with cloud_data, which gets the same objects from WeChat)."""
    missing = [k for k in REQUIRED_KEYS[kind] if not isinstance(payload.get(k), str)]
    if missing:
        raise UnexpectedPayload(f"The decrypted data is not {kind} data (no {', '.join(missing)}).")
    if kind == "userinfo" and ctx.session is not None and payload["openId"] != ctx.session.openid:
        raise UnexpectedPayload("The decrypted user info belongs to another user.")


def _decrypt_with(keys: list[Secret], iv: str, data: str, ctx: Context) -> dict[str, Any]:
    for attempt, key in enumerate(keys):
        try:
            payload = crypto.decrypt_json(key.reveal(), iv, data)
        except crypto.MalformedInput as exc:
            raise InvalidEncryptedData(f"{exc}.") from None
        except crypto.DecryptionFailed:
            continue
        if attempt:
            ctx.log.info("session_key_fallback", openid=ctx.session.openid if ctx.session else None)
            ctx.outcome.used_previous_session_key = True
        return payload
    raise DecryptFailed()
