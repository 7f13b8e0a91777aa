"""phone_blocklist: refuse phone numbers whose prefix is on a list (e.g. virtual carriers)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from gateway import Context, GatewayError, Step, StepOptions


class PhoneBlocked(GatewayError):
    """The plugin's own error: the engine turns it into the usual JSON error body."""

    status = 403
    code = "phone_blocked"
    message = "This phone number cannot be used here."
    hint = "Use another phone number, or contact support."


class BlocklistOptions(StepOptions):
    prefixes: list[str] = Field(min_length=1, description="Refused purePhoneNumber prefixes, digits only.")
    message: str | None = Field(None, description="Replaces the default message shown to the user.")

    @field_validator("prefixes")
    @classmethod
    def _digits(cls, prefixes: list[str]) -> list[str]:
        for prefix in prefixes:
            if not prefix.isdigit():
                raise ValueError(f"prefix {prefix!r} must be digits only")
        return prefixes


class PhoneBlocklist(Step[BlocklistOptions]):
    name: ClassVar[str] = "phone_blocklist"
    version: ClassVar[str] = "1.0.0"
    needs = ("phone",)  # put after decrypt (kind: phone) or phone_code: checked when a configuration loads
    gives = ()

    def __init__(self, options: BlocklistOptions) -> None:
        super().__init__(options)
        self.prefixes = tuple(options.prefixes)  # built once, at configuration load

    async def __call__(self, ctx: Context) -> None:
        number = ctx.data.get("purePhoneNumber")
        if isinstance(number, str) and number.startswith(self.prefixes):
            raise PhoneBlocked(self.options.message, log_detail=f"prefix of {number[:3]}****")
