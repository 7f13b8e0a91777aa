"""Steps declare what they need and give; loading a configuration checks every pipeline's order."""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points
from typing import Any, ClassVar

import pytest

from gateway.config import Config, parse_config
from gateway.context import Context
from gateway.errors import ConfigError
from gateway.registry import PluginError, Registry
from gateway.step import FACTS, Fact, Step, StepOptions
from gateway.testing import make_context
from wxgate_plugins.steps.decrypt import Decrypt, DecryptOptions
from wxgate_plugins.steps.rate_limit import RateLimit, RateLimitOptions
from wxgate_plugins.storages.memory import MemoryStorage

FILE = "shop.yaml"
APP = """apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}
"""


class PhoneRegion(Step[StepOptions]):
    """The step of the issue's story: adds a region to the phone answer."""

    name: ClassVar[str] = "phone_region"
    version: ClassVar[str] = "1.0.0"
    needs = ("phone",)
    gives = ()

    async def __call__(self, ctx: Context) -> None:
        ctx.response["region"] = "mainland" if ctx.data.get("countryCode") == "86" else "elsewhere"


class Legacy(Step[StepOptions]):
    """A step written before declarations: it declares nothing."""

    name: ClassVar[str] = "legacy"
    version: ClassVar[str] = "1.0.0"

    async def __call__(self, ctx: Context) -> None:
        ctx.state["legacy"] = True


REGISTRY = Registry.discover(extra_steps={"phone_region": PhoneRegion, "legacy": Legacy})


def parse(text: str, registry: Registry = REGISTRY) -> Config:
    return parse_config(text, FILE, registry, env={})


def error_of(text: str, registry: Registry = REGISTRY) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text, registry)
    return str(caught.value)


def test_a_step_before_the_one_it_needs_is_refused_with_the_fix() -> None:
    message = error_of(
        """pipelines:
  phone:
    - check_session
    - phone_region
    - decrypt: {kind: phone}
    - respond
"""
        + APP
    )
    assert (
        message == f"{FILE}:4: pipelines.phone[1].phone_region needs a phone number: put it after decrypt or phone_code"
    )


def test_the_same_step_after_what_it_needs_loads() -> None:
    for giver in ("decrypt: {kind: phone}", "phone_code"):
        config = parse(
            f"""pipelines:
  phone:
    - check_session
    - {giver}
    - phone_region
    - respond
"""
            + APP
        )
        assert [s.name for s in config.flows["demo"]["phone"]][2] == "phone_region"


def test_what_decrypt_gives_depends_on_its_kind() -> None:
    message = error_of(
        """pipelines:
  phone:
    - check_session
    - decrypt
    - phone_region
"""
        + APP
    )
    assert message.startswith(f"{FILE}:5: pipelines.phone[2].phone_region needs a phone number")
    assert "give decrypt `kind: phone`" in message
    assert Decrypt.gives_for(DecryptOptions(kind="userinfo")) == ("userinfo",)
    assert Decrypt.gives_for(DecryptOptions()) == ("data",)
    # any kind of open data is data: respond and watermark follow decrypt of any kind
    parse("pipelines:\n  userinfo: [check_session, {decrypt: {kind: userinfo}}, watermark, respond]\n" + APP)


def test_what_rate_limit_needs_depends_on_per() -> None:
    assert RateLimit.needs_for(RateLimitOptions(per="ip", limit=1)) == ()
    assert RateLimit.needs_for(RateLimitOptions(per="openid", limit=1)) == ("session",)
    message = error_of(
        """pipelines:
  login:
    - rate_limit: {per: openid, limit: 5}
    - code2session
    - issue_session
"""
        + APP
    )
    assert message == (
        f"{FILE}:3: pipelines.login[0].rate_limit needs a session: put it after code2session or check_session"
    )


def test_every_mistake_is_reported_with_the_app_pipeline_path() -> None:
    message = error_of(
        """apps:
  demo:
    appid: wx0000000000demo0
    secret: demo-secret-123
    upstream: sandbox
    pipelines:
      login: [issue_session, code2session]
      phone: [check_session, persist_phone]
"""
    )
    assert message.splitlines() == [
        f"{FILE}:7: apps.demo.pipelines.login[0].issue_session needs a session: "
        "put it after code2session or check_session",
        f"{FILE}:8: apps.demo.pipelines.phone[1].persist_phone needs a phone number: "
        "put it after decrypt or phone_code",
    ]


def test_a_top_level_pipeline_every_app_replaces_is_checked_too() -> None:
    message = error_of(
        """pipelines:
  login: [issue_session]
apps:
  demo:
    appid: wx0000000000demo0
    secret: demo-secret-123
    upstream: sandbox
    pipelines:
      login: [code2session, issue_session]
"""
    )
    assert message == (
        f"{FILE}:2: pipelines.login[0].issue_session needs a session: put it after code2session or check_session"
    )


def test_an_undeclared_step_is_checked_as_before() -> None:
    # it needs nothing, and what it gives is unknown: the steps after it are not checked
    config = parse("pipelines:\n  login: [legacy, issue_session]\n" + APP)
    assert [s.name for s in config.flows["demo"]["login"]] == ["legacy", "issue_session"]
    assert Legacy.gives is None
    message = error_of("pipelines:\n  login: [issue_session, legacy]\n" + APP)
    assert "pipelines.login[0].issue_session needs a session" in message


def test_the_built_in_default_pipelines_are_checked_too() -> None:
    class Forgetful(Step[StepOptions]):  # a check_session that gives no session
        name: ClassVar[str] = "check_session"
        version: ClassVar[str] = "1.0.0"
        gives = ()

        async def __call__(self, ctx: Context) -> None:
            return None

    registry = Registry()
    registry.add_storage(MemoryStorage)
    registry.add_step(Forgetful)
    for ep in entry_points(group="wxgate.steps"):  # the real ones, from wxgate's distribution
        if ep.name in ("session_info", "revoke_session", "code2session"):
            registry.add_step(ep.load(), ep)
    message = error_of("pipelines:\n  login: [code2session]\n" + APP, registry)
    assert message.splitlines()[0] == (
        "built-in session pipeline: pipelines.session[1].session_info needs a session: "
        "put it after code2session or check_session"
    )


def test_every_installed_step_declares_what_it_needs_and_gives() -> None:
    for name, cls in Registry.discover().steps.items():
        assert cls.gives is not None, name
        for fact in (*cls.needs, *cls.gives):
            assert fact in FACTS, name


def test_a_misspelled_declaration_is_refused_by_the_registry() -> None:
    class Typo(Step[StepOptions]):
        name: ClassVar[str] = "typo"
        version: ClassVar[str] = "1.0.0"
        needs: ClassVar[Any] = ("phon",)  # what mypy would refuse; the registry does too

    with pytest.raises(
        PluginError, match=r"step 'typo' .* declares needs = \('phon',\): expected a tuple of 'session'"
    ):
        Registry().add_step(Typo)


def test_an_option_dependent_declaration_is_checked_at_load() -> None:
    class Odd(Step[StepOptions]):
        name: ClassVar[str] = "odd"
        version: ClassVar[str] = "1.0.0"
        gives = ()

        @classmethod
        def needs_for(cls, options: StepOptions) -> tuple[Fact, ...]:
            return ("sesion",)  # type: ignore[return-value]

    registry = Registry.discover(extra_steps={"odd": Odd})
    message = error_of("pipelines:\n  login: [code2session, odd]\n" + APP, registry)
    assert message.startswith(f"{FILE}:2: step 'odd' (")
    assert "declares needs ('sesion',) for its options" in message


def test_the_declared_step_still_runs_as_written() -> None:
    ctx = make_context(data={"countryCode": "86"})
    asyncio.run(PhoneRegion(StepOptions())(ctx))
    assert ctx.response == {"region": "mainland"}


# --- an unknown step explains itself -------------------------------------------------------


def test_an_unknown_step_suggests_the_closest_and_says_where_steps_come_from() -> None:
    message = error_of("pipelines:\n  phone: [check_session, phone_regoin]\n" + APP)
    assert message.startswith(
        f"{FILE}:2: pipelines.phone[1]: unknown step 'phone_regoin' (did you mean 'phone_region'?); steps"
    )
    assert "'wxgate.steps' entry points of the installed packages" in message
    assert "`pip install -e .` again" in message
    assert "`wxgate version` lists every step" in message
    assert message.split("known steps: ", 1)[1].split(", ") == sorted(REGISTRY.steps)


def test_an_unknown_step_with_nothing_close_has_no_guess() -> None:
    message = error_of("pipelines:\n  phone: [check_session, zzzz]\n" + APP)
    assert "did you mean" not in message
    assert "unknown step 'zzzz'; steps come from" in message
