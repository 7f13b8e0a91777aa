"""The per-request context that flows through a pipeline's steps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gateway.errors import Unauthorized
from gateway.secret import Secret

if TYPE_CHECKING:
    import structlog

    from gateway.config import AppConfig
    from gateway.events import Events
    from gateway.storage import LoginSession, PhoneBinding, Storage, UserRecord
    from gateway.wechat.client import WeChatClient


@dataclass(slots=True)
class Session:
    """Who the request is for, once code2session or check_session has run."""

    openid: str
    unionid: str | None
    session_key: Secret
    previous_session_key: Secret | None = None


@dataclass(slots=True)
class Outcome:
    """What the built-in steps established, as typed fields rather than string keys in
    ``ctx.state``: the engine, the access log, the metrics and the hooks read these, so a
    renamed field is a type error, not a silently missing log field. Plugin steps may
    read them; the steps named below set them."""

    login: LoginSession | None = None  # check_session: the token's session
    user: UserRecord | None = None  # persist_user
    phone: PhoneBinding | None = None  # persist_phone: what was stored
    event_ids: list[str] = field(default_factory=list)  # webhook: every event queued, in order
    rate_limited: Literal["ip", "openid"] | None = None  # rate_limit: the limit that refused
    used_previous_session_key: bool = False  # decrypt: the previous session_key opened the data


@dataclass(slots=True)
class Context:
    """What a step may read and enrich.

    ``fields`` are the request's string fields (query, form or JSON, merged);
    ``token`` is the bearer token if one was sent. Steps put decrypted open data in
    ``data`` and the client's answer in ``response``; ``outcome`` holds what the
    built-in steps established (typed); ``state`` is free space for plugins (namespace
    your keys). ``events.emit`` queues a webhook event.
    ``timings`` and ``failed_step`` are filled by the engine, and so is
    ``single_use_spent``, once a step marked ``single_use`` has spent its input.
    ``status`` is the success status: a step may set 204 (No Content), and then the
    answer has no body.
    """

    app: AppConfig
    flow: str
    fields: Mapping[str, str]
    token: str | None
    wechat: WeChatClient
    storage: Storage
    events: Events
    log: structlog.typing.FilteringBoundLogger
    request_id: str
    client_ip: str = ""
    session: Session | None = None
    data: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome = field(default_factory=Outcome)
    timings: dict[str, float] = field(default_factory=dict)
    failed_step: str | None = None
    status: int = 200
    single_use_spent: bool = False

    def require_session(self) -> Session:
        if self.session is None:
            raise Unauthorized(log_detail="a step needing a session ran before any session step")
        return self.session
