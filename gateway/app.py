"""make_app: the Tornado application and its routes. Start reading here.

Requests go to :mod:`gateway.handlers`, which build a :class:`~gateway.context.Context`
and run the app's :class:`~gateway.pipeline.Pipeline` from :mod:`gateway.runtime`.
"""

from __future__ import annotations

from typing import Any

import tornado.web

from gateway.handlers import (
    FlowHandler,
    HealthHandler,
    MetricsHandler,
    NotFoundHandler,
    OpenAPIHandler,
    ReadyHandler,
)
from gateway.refusals import GatewayApplication
from gateway.runtime import SANDBOX_UPSTREAM_PATH, Gateway
from gateway.sandbox import sandbox_routes


def _no_access_log(handler: tornado.web.RequestHandler) -> None:
    # Tornado's access log prints the query string; handlers log one redacted event instead.
    return None


def make_app(gateway: Gateway, **settings: Any) -> tornado.web.Application:
    args = {"gateway": gateway}
    routes: list[Any] = [
        tornado.web.url(r"/v1/([^/]+)/(login|phone|userinfo)", FlowHandler, args, name="flow"),
        tornado.web.url(r"/healthz", HealthHandler, args),
        tornado.web.url(r"/readyz", ReadyHandler, args),
        tornado.web.url(r"/metrics", MetricsHandler, args),
        tornado.web.url(r"/openapi\.json", OpenAPIHandler, args),
    ]
    if gateway.sandbox is not None:
        # Only when an app uses the sandbox: never expose fake endpoints beside real ones.
        routes += sandbox_routes(gateway.sandbox, SANDBOX_UPSTREAM_PATH)
    return GatewayApplication(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args=args,
        log_function=_no_access_log,
        compress_response=False,
        **settings,
    )
