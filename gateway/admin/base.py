"""The base of every admin API handler: the token, the security headers, JSON in and out,
and one log event for each change an operator makes."""

from __future__ import annotations

import json
from typing import Any

from gateway.admin.security import set_security_headers
from gateway.admin.state import AdminState
from gateway.errors import InvalidField, InvalidJSON, MissingField, NotFound
from gateway.handlers import JSONHandler
from gateway.logs import get_logger
from gateway.runtime import Gateway

audit_log = get_logger("wxgate.admin")


class AdminAPIHandler(JSONHandler):
    admin: AdminState

    def initialize(self, gateway: Gateway, admin: AdminState) -> None:  # type: ignore[override]
        super().initialize(gateway)
        self.admin = admin

    def set_default_headers(self) -> None:
        set_security_headers(self)

    def prepare(self) -> None:
        # the token before anything else: without it, every path answers the same 401
        # (its WWW-Authenticate challenge comes with the error: gateway.error_response)
        self.admin.token.check(self.request.headers.get("Authorization"))
        super().prepare()
        self.admin.start_sampling()

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise InvalidJSON() from None
        if not isinstance(body, dict):
            raise InvalidJSON()
        return body

    def argument(self, name: str, *, required: bool = True) -> str | None:
        value = self.get_query_argument(name, None)
        if value is None or not value.strip():
            if required:
                raise MissingField(f"The query argument {name!r} is missing.")
            return None
        return value.strip()

    def audit(self, event: str, **changed: Any) -> None:
        """Every state-changing call leaves one line saying what it changed."""
        audit_log.info(
            event, request_id=self.request_id, client_ip=self.request.remote_ip or "", path=self.request.path, **changed
        )


class AdminAPINotFound(AdminAPIHandler):
    """Any other path under /admin/api/: 401 without the token, 404 with it."""

    def prepare(self) -> None:
        super().prepare()
        raise NotFound("No such admin API endpoint.", hint="The endpoints are listed in /admin/api/openapi.json.")


def require_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidField(f"{name!r} must be a whole number from {low} to {high}.")
    return value
