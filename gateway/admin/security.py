"""What every answer under ``/admin/`` carries, and the one token check of the admin API."""

from __future__ import annotations

import tornado.web

from gateway.admin_listener import check_admin_token

# No inline script or style anywhere in the page, no host but this one: an injected
# <script> or a stolen answer has nowhere to run or go.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def set_security_headers(handler: tornado.web.RequestHandler) -> None:
    for name, value in SECURITY_HEADERS.items():
        handler.set_header(name, value)


class AdminToken:
    """The configured token, compared in constant time with what a request presents."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the admin console needs a token (server.admin.token)")
        self._expected = token

    def check(self, authorization: str | None) -> None:
        """Raises AdminTokenRequired, saying whether the token was missing or not accepted."""
        check_admin_token(authorization or "", self._expected)
