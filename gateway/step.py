"""The step interface: the public API for plugin authors (version 1).

A step is a class with a class-level ``name`` (its YAML and entry-point name), a
``version`` string and an ``Options`` model whose fields are its YAML options, given
once as the argument of its base: ``class MyStep(Step[MyOptions])``. It is built
once per pipeline at configuration load with validated options, then awaited once
per request with the :class:`~gateway.context.Context`. It enriches the context or
raises a :class:`~gateway.errors.GatewayError` to stop the flow; it never writes the
HTTP response itself.

A step also says what it **needs** from the steps before it and what it **gives** to the
steps after it, as names of what the context holds (:data:`Fact`): ``needs`` and
``gives`` in the class, next to ``name`` and ``Options``, or :meth:`Step.needs_for` and
:meth:`Step.gives_for` when they depend on the options. Loading a configuration checks
every pipeline against them (:mod:`gateway.pipeline_check`), so a step put before the
one it depends on is an error at load, not a wrong answer at run time.

Declarations were added within interface version 1, without a bump: they are
optional, and a step that declares nothing (``gives`` left ``None``, as every step
written before them) is checked as before: it needs nothing, and since what it gives
is unknown, the steps after it are not checked either.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Generic, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from gateway.context import Context

STEP_API_VERSION = 1

Fact = Literal["session", "phone", "userinfo", "share", "data", "response"]
"""What a step can need or give:

- ``session``: ``ctx.session`` is set (``code2session``, ``check_session``);
- ``phone``, ``userinfo``, ``share``: ``ctx.data`` holds that kind of open data (each implies ``data``);
- ``data``: ``ctx.data`` holds open data of some kind (``decrypt``, ``cloud_data``, ``phone_code``);
- ``response``: ``ctx.response`` has the answer's fields (``respond``, ``issue_session``, ``session_info``).
"""
FACTS: tuple[Fact, ...] = get_args(Fact)


class StepOptions(BaseModel):
    """Base of every step's options: unknown keys are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OptionsT = TypeVar("OptionsT", bound=StepOptions)


class Step(Generic[OptionsT]):
    """Subclass as ``class MyStep(Step[MyOptions])``: ``MyStep.Options`` is then ``MyOptions``."""

    name: ClassVar[str]
    # Optional for a step installed from a distribution: the registry then takes the
    # distribution's version, so that a release cannot contradict it.
    version: ClassVar[str]
    api_version: ClassVar[int] = STEP_API_VERSION
    # Set from the argument of Step[...] by __init_subclass__. Declaring it too, as steps
    # written for wxgate 0.1.0 do, is allowed if it agrees with that argument.
    Options: ClassVar[type[StepOptions]] = StepOptions
    # True for a step that spends something single-use when it runs (a wx.login or phone
    # code redeemed at WeChat, data recorded against replays): after it, an error body
    # says ``retryable: false``, since resending the same request cannot succeed. A step
    # may set it per instance from its options.
    single_use: bool = False
    # What must be in the context before the step runs, and what it leaves there for the
    # steps after it (see Fact). gives = None: not declared (a step written before
    # declarations existed), so nothing after it can be checked.
    needs: ClassVar[tuple[Fact, ...]] = ()
    gives: ClassVar[tuple[Fact, ...] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        typed = _options_type(cls)
        if typed is None:  # Step[Any], a generic subclass, or no Step[...]: Options is as declared or inherited
            return
        where = f"step class {cls.__module__}.{cls.__qualname__}"
        if not issubclass(typed, StepOptions):
            raise TypeError(f"{where}: the argument of Step[...] must be a subclass of {StepOptions.__qualname__}")
        declared = cls.__dict__.get("Options")
        if declared is None:
            if typed is _options_argument(cls):  # not when only a parent's statement says Step[...]: its Options stays
                cls.Options = typed
        # an Options that is no StepOptions at all is the registry's to refuse, naming the plugin's distribution
        elif inspect.isclass(declared) and issubclass(declared, StepOptions) and not issubclass(declared, typed):
            raise TypeError(
                f"{where} declares Options = {declared.__qualname__}, but its base says {typed.__qualname__}: "
                f"self.options would not be of the type it is annotated with. Remove the Options line: "
                f"Step[{typed.__qualname__}] sets it."
            )

    def __init__(self, options: OptionsT) -> None:
        self.options = options

    @classmethod
    def needs_for(cls, options: OptionsT) -> tuple[Fact, ...]:
        """What the step needs with these options: ``needs`` unless overridden.
        Called at configuration load, before the step is built."""
        return cls.needs

    @classmethod
    def gives_for(cls, options: OptionsT) -> tuple[Fact, ...] | None:
        """What the step gives with these options (``None``: not declared): ``gives`` unless overridden."""
        return cls.gives

    async def __call__(self, ctx: Context) -> None:
        raise NotImplementedError


def _options_type(cls: type) -> type | None:
    """The class the nearest ``Step[...]`` (or generic subclass's ``[...]``) in ``cls``'s hierarchy gives."""
    for klass in cls.__mro__:
        argument = _options_argument(klass)
        if inspect.isclass(argument) and argument is not Any:  # Any is a class since Python 3.11
            return argument
    return None


def _options_argument(cls: type) -> object:
    """What the bases written in ``cls``'s own class statement bind Step's ``OptionsT`` to:
    a class, a type variable (``cls`` is a generic subclass), another typing form, or None.

    Followed through generic subclasses (``class Base(Step[OptionsT])``, then
    ``class Mine(Base[MyOptions])``) by matching type variables.
    """
    if cls is Step:
        return OptionsT
    for base in cls.__dict__.get("__orig_bases__", ()):
        origin = get_origin(base)
        if inspect.isclass(origin) and issubclass(origin, Step):
            parameter, parameters = _options_argument(origin), getattr(origin, "__parameters__", ())
            if isinstance(parameter, TypeVar) and parameter in parameters:
                return get_args(base)[parameters.index(parameter)]
    return None
