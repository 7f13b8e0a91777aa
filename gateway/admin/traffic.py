"""``GET /admin/api/overview`` and ``GET /admin/api/pipelines``: each app's flows, and each
flow's steps, with what the last minutes of traffic say about them."""

from __future__ import annotations

from typing import Any

from gateway.admin.base import AdminAPIHandler
from gateway.admin.observer import FLOW_ERRORS, STEP_FAILURES
from gateway.admin.users import phone_lookup
from gateway.admin.window import Window, per_second
from gateway.config import ResolvedStep
from gateway.runtime import AppRuntime

# Option names whose values are masked even when a plugin forgot to declare them SecretStr.
_SECRET_WORDS = ("secret", "key", "token", "password")
MASK = "***"


class OverviewHandler(AdminAPIHandler):
    def get(self) -> None:
        window = self.admin.window.window()
        snapshot = self.gateway.current  # one configuration throughout, whatever a reload does meanwhile
        apps = [
            {
                "name": name,
                "appid": app.config.appid,
                "upstream": app.config.upstream,
                "phone_lookup": phone_lookup(snapshot.config, name).as_json(),
                "flows": [_flow_traffic(window, name, flow) for flow in app.pipelines],
            }
            for name, app in snapshot.apps.items()
        ]
        self.write_json(
            {"window_seconds": window.seconds, "config": snapshot.config.digest, "apps": apps},
        )


class PipelinesHandler(AdminAPIHandler):
    def get(self) -> None:
        window = self.admin.window.window()
        snapshot = self.gateway.current  # the running pipelines and the options they were built from
        config = snapshot.config
        apps = [
            {
                "name": name,
                "appid": app.config.appid,
                "flows": [
                    {
                        **_flow_traffic(window, name, flow),
                        "steps": _steps(window, name, app, flow, config.flows[name][flow]),
                    }
                    for flow in app.pipelines
                ],
            }
            for name, app in snapshot.apps.items()
        ]
        self.write_json({"window_seconds": window.seconds, "config": config.digest, "apps": apps})


def _flow_traffic(window: Window, app: str, flow: str) -> dict[str, Any]:
    where = {"app": app, "flow": flow}
    statuses = {
        status: int(n) for (status,), n in window.deltas("wxgate_requests_total", ("status",), where).items() if n
    }
    errors = {code: int(n) for (code,), n in window.deltas(FLOW_ERRORS, ("code",), where).items() if n}
    requests = sum(statuses.values())
    return {
        "flow": flow,
        "requests": requests,
        "requests_per_second": per_second(requests, window.seconds),
        "p50_ms": window.quantile_ms("wxgate_request_duration_seconds", 0.5, where),
        "p99_ms": window.quantile_ms("wxgate_request_duration_seconds", 0.99, where),
        "statuses": dict(sorted(statuses.items())),
        "errors": dict(sorted(errors.items(), key=lambda item: -item[1])),
    }


def _steps(
    window: Window, app: str, runtime: AppRuntime, flow: str, resolved: tuple[ResolvedStep, ...]
) -> list[dict[str, Any]]:
    # the running pipeline's labels ('decrypt', 'decrypt#2') key the step timings
    labels = [label for label, _ in runtime.pipelines[flow].steps]
    out = []
    for label, spec in zip(labels, resolved, strict=True):
        # step timings are labelled by flow and step, not app: apps sharing a flow share them
        timing = {"flow": flow, "step": label}
        failures = window.deltas(STEP_FAILURES, ("code",), {"app": app, "flow": flow, "step": label})
        out.append(
            {
                "label": label,
                "step": spec.name,
                "options": mask_options(spec.options.model_dump(mode="json")),
                "where": spec.where,
                "calls": int(window.total("wxgate_step_duration_seconds_count", timing)),
                "p50_ms": window.quantile_ms("wxgate_step_duration_seconds", 0.5, timing),
                "p99_ms": window.quantile_ms("wxgate_step_duration_seconds", 0.99, timing),
                "failures": {code: int(n) for (code,), n in failures.items() if n},
            }
        )
    return out


def mask_options(options: Any, key: str = "") -> Any:
    """Step options as ``wxgate pipelines`` shows them (SecretStr already masked by pydantic),
    and any other value under a secret-sounding name masked too."""
    if isinstance(options, dict):
        return {k: mask_options(v, str(k)) for k, v in options.items()}
    if isinstance(options, list):
        return [mask_options(v, key) for v in options]
    if isinstance(options, str) and any(word in key.lower() for word in _SECRET_WORDS):
        return MASK
    return options
