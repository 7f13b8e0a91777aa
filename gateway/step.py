"""The step interface: the public API for plugin authors (version 1).

A step is a class with a class-level ``name`` (its YAML and entry-point name), a
``version`` string and an ``Options`` model whose fields are its YAML options. It is
built once per pipeline at configuration load with validated options, then awaited
once per request with the :class:`~gateway.context.Context`. It enriches the context
or raises a :class:`~gateway.errors.GatewayError` to stop the flow; it never writes
the HTTP response itself.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from gateway.context import Context

STEP_API_VERSION = 1


class StepOptions(BaseModel):
    """Base of every step's options: unknown keys are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OptionsT = TypeVar("OptionsT", bound=StepOptions)


class Step(Generic[OptionsT]):
    """Subclass as ``class MyStep(Step[MyOptions])`` with ``Options = MyOptions``."""

    name: ClassVar[str]
    version: ClassVar[str]
    api_version: ClassVar[int] = STEP_API_VERSION
    Options: ClassVar[type[StepOptions]] = StepOptions
    # True for a step that spends something single-use when it runs (a wx.login or phone
    # code redeemed at WeChat, data recorded against replays): after it, an error body
    # says ``retryable: false``, since resending the same request cannot succeed. A step
    # may set it per instance from its options.
    single_use: bool = False

    def __init__(self, options: OptionsT) -> None:
        self.options = options

    async def __call__(self, ctx: Context) -> None:
        raise NotImplementedError
