"""The operator's console: a JSON admin API under ``/admin/api/`` and the static page under ``/admin/``.

Mounted on the admin listener by :func:`console_routes`, and only when ``server.admin.token``
is set: every API call carries that token as ``Authorization: Bearer``; the page's files
load without it and ask the operator for it. docs/console.md is the user's guide.
"""

from __future__ import annotations

from gateway.admin.routes import console_routes

__all__ = ["console_routes"]
