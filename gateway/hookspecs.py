"""Lifecycle hooks for plugin authors (pluggy). Each docstring is the hook's contract;
docs/hooks.md documents each with an example.

Implement them in a module or class decorated with :data:`hookimpl` and register it
under the ``wxgate.hooks`` entry point. An implementation may accept any subset of a
hook's arguments. Hooks observe: what they return is ignored, an exception is logged
with the plugin's name and never reaches the request, and an ``async def``
implementation runs in the background (bounded by a timeout) so a slow one never
delays a response. Sync implementations run inline: keep them quick.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("wxgate")
hookimpl = pluggy.HookimplMarker("wxgate")


@hookspec
def wxgate_startup(config_digest: str, apps: list[str], pid: int) -> None:
    """A gateway process has started and is about to serve."""


@hookspec
def wxgate_shutdown(pid: int) -> None:
    """A gateway process is stopping (after it stopped accepting requests)."""


@hookspec
def wxgate_request_started(request_id: str, app: str, flow: str, client_ip: str) -> None:
    """A flow request was routed to an app's pipeline and is about to run."""


@hookspec
def wxgate_request_finished(
    request_id: str, app: str, flow: str, status: int, error: str | None, duration_ms: float, steps: dict[str, float]
) -> None:
    """A flow request was answered (``error`` is the stable error code, or None)."""


@hookspec
def wxgate_step_failed(request_id: str, app: str, flow: str, step: str, error: str, status: int) -> None:
    """A step stopped its flow with an error (``error`` is the stable code)."""


@hookspec
def wxgate_user_logged_in(
    request_id: str, app: str, appid: str, openid: str, unionid: str | None, first_login: bool | None
) -> None:
    """A user logged in (login or one-shot flow). ``first_login`` is known when
    persist_user ran in the flow."""


@hookspec
def wxgate_phone_bound(
    request_id: str, app: str, appid: str, openid: str, masked_phone: str, country_code: str
) -> None:
    """A phone flow succeeded for a user. Only the masked number is passed: a plugin
    needing the full number writes a step instead (it then sees ``ctx.data``)."""


@hookspec
def wxgate_config_reloaded(digest: str, previous_digest: str) -> None:
    """A new configuration was validated and swapped in."""


HOOK_NAMES: tuple[str, ...] = tuple(
    name for name, value in list(globals().items()) if name.startswith("wxgate_") and callable(value)
)
