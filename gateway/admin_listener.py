"""The admin listener (``server.admin: {host, port, token}``): the operations endpoints on a
socket of their own, so the public port tells nobody the app names, upstream reachability
or outbox counts.

- ``/healthz`` and ``/readyz`` need no token: orchestrators probe them.
- ``/metrics`` and every ``/admin/api/`` path need ``Authorization: Bearer <token>`` when
  a token is set (compared in constant time).

Admin pages are added by appending to :func:`admin_routes` (an ``/admin/api/`` handler
subclasses :class:`TokenRequired`). Each worker serves the listener on one shared socket;
``/metrics`` of any worker reports the sum over all of them (:mod:`gateway.metrics`).
"""

from __future__ import annotations

import hmac
from typing import Any

import tornado.routing
import tornado.web

from gateway.errors import AdminTokenRequired
from gateway.front import GatewayApplication
from gateway.handlers import HealthHandler, JSONHandler, MetricsHandler, NotFoundHandler, ReadyHandler
from gateway.runtime import Gateway

ADMIN_API_PREFIX = "/admin/api/"


class TokenRequired(JSONHandler):
    """Base of admin handlers that need the token (when one is set)."""

    token: str

    def initialize(self, gateway: Gateway, token: str = "") -> None:
        super().initialize(gateway)
        self.token = token

    def prepare(self) -> None:
        super().prepare()
        if self.token:
            check_admin_token(self.request.headers.get("Authorization", ""), self.token)


def check_admin_token(authorization: str, token: str) -> None:
    """Raises :class:`AdminTokenRequired` unless ``authorization`` carries ``token``: "not accepted"
    for a wrong bearer token, "needs the admin token" when none was sent (both 401, one code)."""
    if token_matches(authorization, token):
        return
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        raise AdminTokenRequired.not_accepted()
    raise AdminTokenRequired()


def token_matches(authorization: str, token: str) -> bool:
    scheme, _, given = authorization.partition(" ")
    # compare_digest on bytes (a str with non-ASCII characters would raise): equal time for
    # every wrong token of any length or content
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class AdminMetricsHandler(TokenRequired, MetricsHandler):
    """/metrics on the admin listener."""


def admin_routes(gateway: Gateway, token: str) -> list[tornado.routing.Rule]:
    """The admin listener's routes; extend the list to add admin pages."""
    open_args: dict[str, Any] = {"gateway": gateway}
    guarded: dict[str, Any] = {"gateway": gateway, "token": token}
    from gateway.admin import console_routes  # the operator's console: /admin/, none without a token

    return [
        tornado.web.url(r"/healthz", HealthHandler, open_args),
        tornado.web.url(r"/readyz", ReadyHandler, open_args),
        tornado.web.url(r"/metrics", AdminMetricsHandler, guarded),
        *console_routes(gateway, token),
    ]


def make_admin_app(gateway: Gateway) -> tornado.web.Application:
    admin = gateway.config.server.admin
    token = admin.token.get_secret_value() if admin is not None else ""
    return GatewayApplication(
        gateway,
        admin_routes(gateway, token),
        serves_flows=False,
        default_handler_class=NotFoundHandler,
        default_handler_args={"gateway": gateway},
        log_function=_no_access_log,
        compress_response=False,
    )


def _no_access_log(handler: tornado.web.RequestHandler) -> None:
    return None  # handlers log one redacted event each (gateway.request_record)
