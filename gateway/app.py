"""make_app: the Tornado application and its routes. Start reading here.

Every request enters through :mod:`gateway.front`. Flow requests go to
:mod:`gateway.flow_request`, which builds a :class:`~gateway.context.Context` and runs the
app's :class:`~gateway.pipeline.Pipeline` from :mod:`gateway.runtime`; the other routes
below go to :mod:`gateway.handlers`.
"""

from __future__ import annotations

from typing import Any

import tornado.web

from gateway.front import GatewayApplication
from gateway.handlers import (
    HealthHandler,
    MetricsHandler,
    NotFoundHandler,
    OpenAPIHandler,
    ReadyHandler,
)
from gateway.runtime import SANDBOX_UPSTREAM_PATH, Gateway
from gateway.sandbox import sandbox_routes


def _no_access_log(handler: tornado.web.RequestHandler) -> None:
    # Tornado's access log prints the query string; handlers log one redacted event instead.
    return None


def make_app(gateway: Gateway, **settings: Any) -> tornado.web.Application:
    args = {"gateway": gateway}
    routes: list[Any] = [
        # /v1/{app}/{login|phone|userinfo} never reaches this router: see gateway.front
        tornado.web.url(r"/healthz", HealthHandler, args),
        tornado.web.url(r"/readyz", ReadyHandler, args),
        tornado.web.url(r"/metrics", MetricsHandler, args),
        tornado.web.url(r"/openapi\.json", OpenAPIHandler, args),
    ]
    if gateway.sandbox is not None:
        # Only when an app uses the sandbox: never expose fake endpoints beside real ones.
        routes += sandbox_routes(gateway.sandbox, SANDBOX_UPSTREAM_PATH)
    return GatewayApplication(
        gateway,
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args=args,
        log_function=_no_access_log,
        compress_response=False,
        **settings,
    )
