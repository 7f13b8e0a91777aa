"""persist_phone: bind the decrypted phone number to the user.

``store_phone`` decides what is kept at rest: ``plain`` (the number), ``hashed`` (an
HMAC-SHA256 of it under ``hash_key``, plus the masked form: you can find a user by
number but not read numbers back), or ``masked`` (only ``138****6666``, or
``+1 ******0123`` for a number outside the mainland).
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, model_validator

from gateway import Context, Step, StepOptions
from gateway.errors import UnexpectedPayload
from gateway.phones import masked_national, masked_phone
from gateway.sealing import keyed_hash
from gateway.storage import PhoneBinding


class PersistPhoneOptions(StepOptions):
    store_phone: Literal["plain", "hashed", "masked"] = "plain"
    hash_key: SecretStr | None = Field(None, description="Required with store_phone: hashed (keep it secret).")

    @model_validator(mode="after")
    def _hash_key_needed(self) -> PersistPhoneOptions:
        if self.store_phone == "hashed" and (self.hash_key is None or len(self.hash_key.get_secret_value()) < 16):
            raise ValueError("store_phone: hashed needs hash_key, a secret of at least 16 characters")
        return self


class PersistPhone(Step[PersistPhoneOptions]):
    name: ClassVar[str] = "persist_phone"
    needs = ("session", "phone")
    gives = ()

    async def __call__(self, ctx: Context) -> None:
        session = ctx.require_session()
        pure, country = ctx.data.get("purePhoneNumber"), ctx.data.get("countryCode")
        if not isinstance(pure, str) or not isinstance(country, str):
            raise UnexpectedPayload("There is no phone number to store.")
        full = f"+{country}{pure}"
        masked = masked_phone(pure, country)
        if self.options.store_phone == "plain":
            binding = PhoneBinding(key=full, masked=masked, country_code=country, number=pure)
        elif self.options.store_phone == "hashed":
            assert self.options.hash_key is not None
            binding = PhoneBinding(
                key=keyed_hash(self.options.hash_key.get_secret_value().encode(), full),
                masked=masked,
                country_code=country,
            )
        else:
            binding = PhoneBinding(
                key=f"+{country}:{masked_national(pure, country)}", masked=masked, country_code=country
            )
        await ctx.storage.bind_phone(ctx.app.appid, session.openid, binding, time.time())
        ctx.outcome.phone = binding
