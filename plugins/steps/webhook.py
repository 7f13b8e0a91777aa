"""webhook: tell the rest of the system, through the durable outbox.

The event is written to storage in the request (so it survives a crash) and
delivered by the gateway's delivery workers; the response never waits on a receiver.
A client retrying the same request produces the same event id, so no duplicate.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Literal

from pydantic import Field

from gateway import Context, Step, StepOptions
from gateway.phones import masked_phone
from gateway.request_key import canonical_request_key


class WebhookOptions(StepOptions):
    event: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", description="e.g. user.login, phone.bound")
    phone: Literal["masked", "full", "none"] = Field("masked", description="How a phone number is sent.")


class Webhook(Step[WebhookOptions]):
    name: ClassVar[str] = "webhook"
    needs = ("session",)
    gives = ()

    async def __call__(self, ctx: Context) -> None:
        session = ctx.require_session()
        payload: dict[str, Any] = {"openid": session.openid, "unionid": session.unionid, "request_id": ctx.request_id}
        user = ctx.outcome.user
        if user is not None:
            payload["first_login"] = user.logins == 1
        pure, country = ctx.data.get("purePhoneNumber"), ctx.data.get("countryCode")
        if isinstance(pure, str) and isinstance(country, str) and self.options.phone != "none":
            if self.options.phone == "full":
                payload["phone"] = {"phoneNumber": ctx.data.get("phoneNumber"), "purePhoneNumber": pure}
            else:
                payload["phone"] = {"masked": masked_phone(pure, country)}
            payload["phone"]["countryCode"] = country
        # what the request carried (the same retried gives the same event; a logout, its own)
        carried = canonical_request_key(ctx.app.appid, ctx.fields, ctx.request_id)
        fingerprint = hashlib.sha256("|".join([session.openid, ctx.flow, carried]).encode()).hexdigest()
        ctx.outcome.event_ids.append(await ctx.events.emit(self.options.event, ctx.app, payload, key=fingerprint))
