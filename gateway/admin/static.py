"""The console's page and its files, served from the package (no build step), without
the token: the page asks the operator for it and sends it with each API call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tornado.web

from gateway.admin.security import set_security_headers
from gateway.error_response import render_error
from gateway.errors import MethodNotAllowed, NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"


class ConsoleFileHandler(tornado.web.StaticFileHandler):
    def set_default_headers(self) -> None:
        set_security_headers(self)

    def set_extra_headers(self, path: str) -> None:
        # revalidated on each load: an upgraded gateway's page is seen at once
        self.set_header("Cache-Control", "no-cache")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        answer = render_error(MethodNotAllowed() if status_code == 405 else NotFound())
        self.set_status(answer.status)
        for name, value in answer.headers.items():
            self.set_header(name, value)
        self.finish(answer.body)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # a missing file is a 404, not an error worth a traceback; the URI is not logged
        if not isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)


class ConsoleRedirect(tornado.web.RequestHandler):
    """/admin → /admin/ (the page's relative links need the slash)."""

    def set_default_headers(self) -> None:
        set_security_headers(self)

    def get(self) -> None:
        self.redirect("/admin/", permanent=False)
