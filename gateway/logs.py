"""structlog set-up: JSON lines in production, console in dev, secrets never shown.

The :func:`redact` processor is the last line of defence: whatever a step or plugin
logs, values under secret-looking keys are replaced and phone numbers are masked.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

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
_PHONE = re.compile(r"(?<!\d)(\+?86[- ]?)?(1[3-9]\d)(\d{4})(\d{4})(?!\d)")


def mask_phone(text: str) -> str:
    return _PHONE.sub(lambda m: f"{m.group(1) or ''}{m.group(2)}****{m.group(4)}", text)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return mask_phone(value) if len(value) >= 11 else value  # shorter strings hold no phone
    if isinstance(value, dict):
        return {k: ("***" if str(k).lower() in SECRET_KEYS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in SECRET_KEYS:
            event_dict[key] = "***"
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def configure_logging(
    fmt: Literal["console", "json"] = "console", stream: TextIO | None = None, level: int = logging.INFO
) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
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
