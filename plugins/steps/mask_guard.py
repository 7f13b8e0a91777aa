"""mask_guard: refuse masked phone numbers (138****6666) from too old base libraries."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from gateway import Context, Step, StepOptions
from gateway.errors import PhoneMasked


class MaskGuardOptions(StepOptions):
    fields: list[str] = Field(
        default_factory=lambda: ["phoneNumber", "purePhoneNumber"], description="Fields that must hold no '*'."
    )


class MaskGuard(Step[MaskGuardOptions]):
    name: ClassVar[str] = "mask_guard"
    needs = ("data",)
    gives = ()

    async def __call__(self, ctx: Context) -> None:
        for field in self.options.fields:
            value = ctx.data.get(field)
            if isinstance(value, str) and "*" in value:
                raise PhoneMasked()
