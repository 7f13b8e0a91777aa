"""respond: shape the answer from the decrypted data (the watermark is left out)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from gateway import Context, Step, StepOptions


class RespondOptions(StepOptions):
    fields: list[str] | None = Field(None, description="Decrypted fields to return; all when unset.")
    exclude: list[str] = Field(default_factory=lambda: ["watermark"], description="Fields never returned.")


class Respond(Step[RespondOptions]):
    name: ClassVar[str] = "respond"
    needs = ("data",)
    gives = ("response",)

    async def __call__(self, ctx: Context) -> None:
        wanted = self.options.fields if self.options.fields is not None else list(ctx.data)
        excluded = self.options.exclude
        for key in wanted:
            if key in ctx.data and key not in excluded:
                ctx.response[key] = ctx.data[key]
