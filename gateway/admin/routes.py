"""The console's routes, for the admin listener's route list."""

from __future__ import annotations

from typing import Any

import tornado.routing
import tornado.web

from gateway.admin.base import AdminAPIHandler, AdminAPINotFound
from gateway.admin.configuration import ConfigHandler, DraftHandler
from gateway.admin.events import EventsHandler, PurgeHandler, RetryHandler
from gateway.admin.openapi import build_admin_openapi
from gateway.admin.state import admin_state
from gateway.admin.static import STATIC_DIR, ConsoleFileHandler, ConsoleRedirect
from gateway.admin.traffic import OverviewHandler, PipelinesHandler
from gateway.admin.users import RevokeHandler, UsersHandler
from gateway.jsoncodec import dumps
from gateway.runtime import Gateway


class OpenAPIHandler(AdminAPIHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(dumps(build_admin_openapi()))


API: list[tuple[str, type[AdminAPIHandler]]] = [
    (r"/admin/api/openapi\.json", OpenAPIHandler),
    (r"/admin/api/overview", OverviewHandler),
    (r"/admin/api/pipelines", PipelinesHandler),
    (r"/admin/api/events", EventsHandler),
    (r"/admin/api/events/retry", RetryHandler),
    (r"/admin/api/events/purge", PurgeHandler),
    (r"/admin/api/users", UsersHandler),
    (r"/admin/api/users/revoke", RevokeHandler),
    (r"/admin/api/config", ConfigHandler),
    (r"/admin/api/config/check", DraftHandler),
    (r"/admin/api/.*", AdminAPINotFound),
]


def console_routes(gateway: Gateway, token: str | None) -> list[tornado.routing.Rule]:
    """The console's routes; none when no token is configured (the console is then off)."""
    if not token:
        return []
    args: dict[str, Any] = {"gateway": gateway, "admin": admin_state(gateway, token)}
    return [
        *(tornado.web.url(pattern, handler, args) for pattern, handler in API),
        tornado.web.url(r"/admin", ConsoleRedirect),
        tornado.web.url(
            r"/admin/(.*)", ConsoleFileHandler, {"path": str(STATIC_DIR), "default_filename": "index.html"}
        ),
    ]
