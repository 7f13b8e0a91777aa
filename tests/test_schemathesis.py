"""schemathesis against the live /openapi.json of a real `wxgate serve` process.

The gateway runs the shipped config/gateway.yaml (embedded MongoDB-wire storage, the
sandbox as WeChat) from a temporary directory, so its data lands there; only the per-IP
rate limits are raised, since every generated request comes from 127.0.0.1. For each
operation of the served document, schemathesis generates schema-valid (positive) and
schema-violating (negative) requests, a bounded number each, for the configured app
and for generated app names, without and with a live session token. Every answer must:

- have a status the document lists for the operation, a documented content type, and a
  body that conforms to the schema for that status;
- be an error whose code is documented for that very status;
- be a 5xx only for upstream or storage trouble (upstream_*, storage_unavailable);
- come back within seconds, with nothing crashing in the gateway's log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.errors import all_error_classes
from gateway.openapi import build_openapi
from tests.helpers import ROOT, WXGATE, post, start_on_a_free_port

EXAMPLES = 25
ANSWER_SECONDS = 5.0
STATUS_OF_CODE = {cls.code: cls.status for cls in all_error_classes()}
SERVER_ERROR_CODES = {code for code in STATUS_OF_CODE if code.startswith("upstream_") or code == "storage_unavailable"}
# Documented when this module is collected; the live document is what the tests load.
OPERATIONS = [(path, method.upper()) for path, item in build_openapi()["paths"].items() for method in item]
FLOW_OPERATIONS = [(path, method) for path, method in OPERATIONS if "{app}" in path]
OTHER_OPERATIONS = [(path, method) for path, method in OPERATIONS if "{app}" not in path]
CRASHES = re.compile(r"step_crashed|unhandled_exception|Traceback")


@dataclass
class Server:
    url: str
    log: Path
    token: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    shipped = (ROOT / "config" / "gateway.yaml").read_text()
    config, count = re.subn(r"(rate_limit: \{[^}]*limit: )\d+", r"\g<1>1000000", shipped)
    assert count >= 1, "config/gateway.yaml has no rate_limit step any more: revisit this test"
    (workdir / "gateway.yaml").write_text(config)
    log = workdir / "gateway.log"
    env = {
        **os.environ,
        "WXGATE_LOG_FORMAT": "json",
        "WXGATE_MONGO_URI": "embedded",
        "WXGATE_DATA_DIR": str(workdir / "mongo"),
        "WXGATE_HOST": "127.0.0.1",
        "WXGATE_WEBHOOK_URL": "",
    }

    def start(port: int) -> subprocess.Popen[str]:
        with log.open("w") as out:
            return subprocess.Popen(
                [WXGATE, "serve", "--config", str(workdir / "gateway.yaml"), "--port", str(port)],
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )

    proc, _, base = start_on_a_free_port(start, output=lambda _: log.read_text())
    try:
        _, device = post(base + "/_sandbox/demo/wx.login", {"user": "schemathesis"})
        status, login = post(base + "/v1/demo/login", {"code": device["code"]})
        assert status == 200, login
        yield Server(base, log, login["token"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def schema(server: Server) -> schemathesis.BaseSchema:
    loaded = schemathesis.openapi.from_url(server.url + "/openapi.json")
    loaded.validate()  # the document itself is valid OpenAPI 3.1
    return loaded


def error_code_matches_status(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Any) -> None:
    """An error's code is one of the documented codes of that status; a 5xx is upstream or storage."""
    status = response.status_code
    if status < 400 or case.operation.path in ("/readyz", "/healthz", "/metrics", "/openapi.json"):
        return
    body = json.loads(response.content)
    code = body["error"]["code"]
    documented = STATUS_OF_CODE.get(code)
    assert documented == status, f"{status} with code {code!r} (documented for {documented})"
    description = case.operation.definition.raw["responses"][str(status)]["description"]
    assert re.search(rf"\b{re.escape(code)}\b", description), f"{code!r} is not listed for {status}: {description}"
    assert status < 500 or code in SERVER_ERROR_CODES, f"server error {status} {code}"
    assert "Traceback" not in response.text


def answers_in_time(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Any) -> None:
    assert response.elapsed < ANSWER_SECONDS, f"answered in {response.elapsed:.1f}s"


CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_code_matches_status,
    answers_in_time,
]


def run(
    server: Server,
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    *,
    app: str | None = None,
    headers: dict[str, str] | None = None,
) -> Counter[tuple[int, str | None]]:
    """EXAMPLES generated requests; returns how often each (status, error code) came back."""
    seen: Counter[tuple[int, str | None]] = Counter()
    log_start = server.log.stat().st_size
    strategy = operation.as_strategy(mode, path_parameters={"app": app} if app else None)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=strategy)
    def check(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=server.url, headers=headers, timeout=ANSWER_SECONDS * 2)
        case.validate_response(response, checks=CHECKS, headers=headers)
        code = None
        if response.status_code >= 400 and operation.path.startswith("/v1/"):
            code = json.loads(response.content)["error"]["code"]
        seen[(response.status_code, code)] += 1

    check()
    with server.log.open() as log:
        log.seek(log_start)
        crashes = [line for line in log if CRASHES.search(line)]
    assert not crashes, crashes[:3]
    assert sum(seen.values()) >= 1
    return seen


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
@pytest.mark.parametrize(("path", "method"), FLOW_OPERATIONS, ids=[f"{m} {p}" for p, m in FLOW_OPERATIONS])
def test_flow_operation_for_the_app(
    schema: schemathesis.BaseSchema, server: Server, path: str, method: str, mode: GenerationMode
) -> None:
    seen = run(server, schema[path][method], mode, app="demo")
    # The requests reached the app's pipelines, not only the router.
    assert not {code for _, code in seen} <= {"unknown_app", "not_found"}, seen


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
@pytest.mark.parametrize(("path", "method"), FLOW_OPERATIONS, ids=[f"{m} {p}" for p, m in FLOW_OPERATIONS])
def test_flow_operation_for_generated_app_names(
    schema: schemathesis.BaseSchema, server: Server, path: str, method: str, mode: GenerationMode
) -> None:
    run(server, schema[path][method], mode)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
@pytest.mark.parametrize("path", ["/v1/{app}/phone", "/v1/{app}/userinfo"])
def test_flow_operation_with_a_live_token(
    schema: schemathesis.BaseSchema, server: Server, path: str, mode: GenerationMode
) -> None:
    seen = run(server, schema[path]["POST"], mode, app="demo", headers={"Authorization": f"Bearer {server.token}"})
    # The token was accepted: past check_session, into decryption and field checks.
    assert {code for _, code in seen} - {"session_required", "session_invalid"}, seen


@pytest.mark.parametrize(("path", "method"), OTHER_OPERATIONS, ids=[f"{m} {p}" for p, m in OTHER_OPERATIONS])
def test_operational_endpoint(schema: schemathesis.BaseSchema, server: Server, path: str, method: str) -> None:
    seen = run(server, schema[path][method], GenerationMode.POSITIVE)
    assert {status for status, _ in seen} <= {200}, seen


def test_served_document_is_the_built_one(server: Server) -> None:
    with urllib.request.urlopen(server.url + "/openapi.json", timeout=10) as response:
        served = json.loads(response.read())
    assert served == json.loads(json.dumps(build_openapi()))
    assert {(p, m.upper()) for p, item in served["paths"].items() for m in item} == set(OPERATIONS)


SHAPE_CODES = {"missing_field", "invalid_field", "invalid_json"}


def test_schema_valid_login_requests_are_not_refused_for_their_shape(
    schema: schemathesis.BaseSchema, server: Server
) -> None:
    """The document states login's shape (body required, the code's pattern): a request it
    calls valid may be refused for its content (invalid_code), never for its shape."""
    seen = run(server, schema["/v1/{app}/login"]["POST"], GenerationMode.POSITIVE, app="demo")
    assert not {code for _, code in seen} & SHAPE_CODES, seen
    assert {code for _, code in seen} & {"invalid_code"}, seen


def test_gateway_still_serves_after_the_run(server: Server) -> None:
    started = time.monotonic()
    with urllib.request.urlopen(server.url + "/healthz", timeout=10) as response:
        assert response.status == 200
    assert time.monotonic() - started < ANSWER_SECONDS


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_schema_valid_phone_requests_are_not_refused_as_invalid_field(
    schema: schemathesis.BaseSchema, server: Server, method: str
) -> None:
    """Was: the document gave /phone's code (query and body) no pattern, so schema-valid codes
    were refused with invalid_field."""
    seen = run(server, schema["/v1/{app}/phone"][method], GenerationMode.POSITIVE, app="demo")
    assert "invalid_field" not in {code for _, code in seen}, seen
