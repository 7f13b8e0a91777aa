"""A step's metadata is declared once: ``Options`` comes from ``Step[...]``, and a step
installed from a distribution that declares no ``version`` has the distribution's."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points, version
from typing import Any, ClassVar, Generic, TypeVar, get_args

import pytest
from wxgate_blocklist.step import BlocklistOptions, PhoneBlocklist

from gateway.context import Context
from gateway.registry import PluginError, Registry
from gateway.step import Step, StepOptions
from wxgate_plugins.steps.decrypt import Decrypt, DecryptOptions


class GreetOptions(StepOptions):
    greeting: str = "hello"


class LoudGreetOptions(GreetOptions):
    volume: int = 11


class OtherOptions(StepOptions):
    other: int = 0


class Greet(Step[GreetOptions]):
    name: ClassVar[str] = "greet"
    version: ClassVar[str] = "2.0.0"

    async def __call__(self, ctx: Context) -> None:
        ctx.response["greeting"] = self.options.greeting


def step_entry_point(name: str, distribution: str) -> EntryPoint:
    """An entry point provided by the installed ``distribution``, named ``name`` (as the step
    it is used for must be)."""
    installed = next(ep for ep in entry_points(group="wxgate.steps") if ep.dist and ep.dist.name == distribution)
    ep = EntryPoint(name=name, value=installed.value, group=installed.group)
    vars(ep)["dist"] = installed.dist  # as importlib.metadata attaches it: EntryPoint is otherwise immutable
    return ep


# --- Options from Step[...] -----------------------------------------------------------------


def test_options_come_from_the_argument_of_step() -> None:
    assert Greet.Options is GreetOptions
    assert Greet(Greet.Options(greeting="hi")).options == GreetOptions(greeting="hi")


def test_every_installed_step_has_the_options_of_its_step_argument() -> None:
    registry = Registry.discover()
    for name, cls in registry.steps.items():
        (argument,) = get_args(cls.__orig_bases__[0])  # type: ignore[attr-defined]
        assert cls.Options is argument, name
    assert Decrypt.Options is DecryptOptions
    assert PhoneBlocklist.Options is BlocklistOptions


def test_an_explicit_options_that_agrees_still_works() -> None:
    class OldStyle(Step[GreetOptions]):  # as steps were written for wxgate 0.1.0
        name: ClassVar[str] = "old_style"
        version: ClassVar[str] = "1.0.0"
        Options: ClassVar[type[StepOptions]] = GreetOptions

    class Narrower(Step[GreetOptions]):  # a subclass is what self.options is annotated with, too
        name: ClassVar[str] = "narrower"
        version: ClassVar[str] = "1.0.0"
        Options: ClassVar[type[StepOptions]] = LoudGreetOptions

    class Untyped(Step[StepOptions]):
        name: ClassVar[str] = "untyped"
        version: ClassVar[str] = "1.0.0"
        Options: ClassVar[type[StepOptions]] = GreetOptions

    registry = Registry()
    for cls in (OldStyle, Narrower, Untyped):
        registry.add_step(cls)
    assert [OldStyle.Options, Narrower.Options, Untyped.Options] == [GreetOptions, LoudGreetOptions, GreetOptions]


def test_an_explicit_options_that_contradicts_step_is_refused() -> None:
    with pytest.raises(TypeError) as caught:

        class Contradicts(Step[GreetOptions]):
            name: ClassVar[str] = "contradicts"
            version: ClassVar[str] = "1.0.0"
            Options: ClassVar[type[StepOptions]] = OtherOptions

    message = str(caught.value)
    assert "step class tests.test_step_metadata." in message
    assert "Contradicts declares Options = OtherOptions, but its base says GreetOptions" in message
    assert "Remove the Options line: Step[GreetOptions] sets it." in message


def test_a_wider_explicit_options_is_refused() -> None:
    with pytest.raises(TypeError, match="declares Options = StepOptions, but its base says GreetOptions"):

        class Wider(Step[GreetOptions]):
            Options: ClassVar[type[StepOptions]] = StepOptions


def test_a_step_argument_that_is_not_step_options_is_refused() -> None:
    with pytest.raises(TypeError, match=r"the argument of Step\[\.\.\.\] must be a subclass of StepOptions"):

        class NotOptions(Step[int]):  # type: ignore[type-var]
            pass


def test_a_subclass_keeps_its_parents_options() -> None:
    class Louder(Greet):
        name: ClassVar[str] = "louder"

    class Declared(Step[GreetOptions]):
        Options: ClassVar[type[StepOptions]] = LoudGreetOptions

    class Child(Declared):
        pass

    assert Louder.Options is GreetOptions
    assert Child.Options is LoudGreetOptions
    with pytest.raises(TypeError, match="declares Options = OtherOptions, but its base says GreetOptions"):

        class Unrelated(Greet):
            Options: ClassVar[type[StepOptions]] = OtherOptions


OptionsT = TypeVar("OptionsT", bound=StepOptions)
ExtraT = TypeVar("ExtraT")


class Base(Step[OptionsT]):
    """A generic step for others to parameterize."""


class TwoParameters(Base[OptionsT], Generic[ExtraT, OptionsT]):
    pass


def test_options_through_a_generic_subclass() -> None:
    class Mine(Base[GreetOptions]):
        pass

    class Other(TwoParameters[int, OtherOptions]):
        pass

    assert Base.Options is StepOptions  # nothing to derive yet
    assert Mine.Options is GreetOptions
    assert Other.Options is OtherOptions


def test_step_any_keeps_the_default() -> None:
    class Loose(Step[Any]):
        pass

    assert Loose.Options is StepOptions


# --- version from the distribution ------------------------------------------------------------


def test_built_in_steps_have_wxgates_version() -> None:
    registry = Registry.discover()
    built_ins = {ep.name for ep in entry_points(group="wxgate.steps") if ep.dist and ep.dist.name == "wxgate"}
    assert len(built_ins) >= 15
    assert {name: registry.steps[name].version for name in built_ins} == dict.fromkeys(built_ins, version("wxgate"))
    assert "wxgate" in registry.origins["step 'decrypt'"]


def test_a_declared_version_is_kept() -> None:
    registry = Registry.discover()
    assert registry.steps["phone_blocklist"].version == "1.0.0"  # declared in the class
    ep = step_entry_point("greet", "wxgate")
    Registry().add_step(Greet, ep)
    assert Greet.version == "2.0.0" != version("wxgate")


def test_a_step_installed_without_a_version_has_its_distributions() -> None:
    class Unversioned(Step[StepOptions]):
        name: ClassVar[str] = "unversioned"

    registry = Registry()
    registry.add_step(Unversioned, step_entry_point("unversioned", "wxgate-plugin-example"))
    assert registry.steps["unversioned"].version == version("wxgate-plugin-example")


def test_a_subclass_of_a_built_in_has_its_own_distributions_version() -> None:
    Registry.discover()  # Decrypt now has wxgate's version

    class MyDecrypt(Decrypt):
        name: ClassVar[str] = "my_decrypt"

    registry = Registry()
    registry.add_step(MyDecrypt, step_entry_point("my_decrypt", "wxgate-plugin-example"))
    assert MyDecrypt.version == version("wxgate-plugin-example")
    assert Decrypt.version == version("wxgate")
    with pytest.raises(PluginError, match="declares no version string"):
        Registry().add_step(type("Again", (Decrypt,), {"name": "again"}))  # registered in code: none to take


def test_a_step_registered_in_code_must_declare_its_version() -> None:
    class Unversioned(Step[StepOptions]):
        name: ClassVar[str] = "unversioned"

    with pytest.raises(PluginError) as caught:
        Registry().add_step(Unversioned)
    assert str(caught.value) == (
        "step 'unversioned' from registered in code declares no version string "
        "(only one installed from a distribution may leave it out: it then has the distribution's)"
    )
    bare = EntryPoint(name="unversioned", value="tests.test_step_metadata:Unversioned", group="wxgate.steps")
    with pytest.raises(PluginError, match="declares no version string"):
        Registry().add_step(Unversioned, bare)  # an entry point no distribution provides
