"""structlog set-up: JSON lines in production, console in dev, secrets never shown.

The :func:`redact` processor is the last line of defence: whatever a step or plugin
logs, values under secret-looking keys are replaced and phone numbers are masked.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import orjson
import structlog

from gateway.phones import mask_phones_in_text

SECRET_KEYS = frozenset(
    {
        "session_key",
        "previous_session_key",
        "sessionkey",
        "secret",
        "app_secret",
        "access_token",
        "token",
        "authorization",
        "encrypteddata",
        "encrypted_data",
        "iv",
        "code",
        "js_code",
        "signature",
        "password",
    }
)
# The name plugins and tests import: free text with every country's numbers masked.
mask_phone = mask_phones_in_text


# Values the gateway itself produces and that can hold neither a secret nor a phone:
# skipped, because this processor runs on every log line (client-controlled values such
# as request_id and path are still scrubbed).
TRUSTED_KEYS = frozenset(
    {"event", "level", "timestamp", "method", "status", "duration_ms", "app", "flow", "openid", "steps", "worker"}
)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return mask_phones_in_text(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {k: ("***" if str(k).lower() in SECRET_KEYS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return _scrub(str(value))


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if key in TRUSTED_KEYS:
            continue
        if key.lower() in SECRET_KEYS:
            event_dict[key] = "***"
        elif not isinstance(value, int | float):
            event_dict[key] = _scrub(value)
    return event_dict


class _Timestamp:
    """ISO 8601 UTC with microseconds (``2026-11-25T08:00:00.123456Z``), like structlog's
    ``TimeStamper(fmt="iso", utc=True)``; the date and time of day are formatted once per
    second, not once per line (0.7 against 1.6 µs, on every request)."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.second, self.prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event_dict["timestamp"] = f"{self.prefix}.{int((now - second) * 1e6):06d}Z"
        return event_dict


def _orjson_text(obj: Any, **_: Any) -> str:
    # orjson: a third of the cost of json.dumps on the one-line-per-request path
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(
    fmt: Literal["console", "json"] = "console", stream: TextIO | None = None, level: int = logging.INFO
) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_text)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _Timestamp(),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Tornado's own loggers (warnings, errors) go to the same stream; its access log is
    # replaced by our one event per request, which never shows query strings.
    logging.basicConfig(stream=stream or sys.stderr, level=logging.WARNING, force=True)


def get_logger(name: str = "wxgate") -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
