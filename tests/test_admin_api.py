"""The console's admin API over real HTTP, on the admin listener of a served gateway
(tests/console_harness.py): the token, the figures after real traffic, users, sessions,
dead letters delivered to a real receiver, and drafts checked as `wxgate validate` checks them."""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
import structlog.testing

from gateway.admin.openapi import PATHS, build_admin_openapi
from gateway.admin.routes import API
from gateway.admin.security import CONTENT_SECURITY_POLICY
from gateway.admin.static import STATIC_DIR
from gateway.admin.window import MetricsWindow, bucket_quantile
from tests.console_harness import ADMIN_TOKEN, HASH_KEY, ConsoleServer, console_config, traffic
from tests.helpers import run_cli
from tests.webhook_receiver import Receiver

DOC = build_admin_openapi()


@pytest.fixture(scope="module")
def crm() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def served(crm: Receiver) -> Iterator[tuple[ConsoleServer, dict[str, str]]]:
    server = ConsoleServer(console_config(crm.url)).start()
    try:
        yield server, traffic(server)
    finally:
        server.stop()


@pytest.fixture
def server(served: tuple[ConsoleServer, dict[str, str]]) -> ConsoleServer:
    return served[0]


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def conforms(body: Any, schema: str) -> None:
    jsonschema.validate(body, {"$ref": f"#/components/schemas/{schema}", "components": DOC["components"]})


# --- the token ------------------------------------------------------------------------


def api_paths() -> list[tuple[str, str]]:
    out = []
    for path, methods in PATHS.items():
        out += [(method.upper(), path) for method in methods]
    return [*out, ("GET", "/admin/api/no-such-thing"), ("DELETE", "/admin/api/users")]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789", f"Basic {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN}x", "Bearer ", "Bearer ëë"],
)
def test_every_api_path_answers_401_without_the_token(server: ConsoleServer, authorization: str | None) -> None:
    for method, path in api_paths():
        headers = {} if authorization is None else {"Authorization": authorization}
        body = b"{}" if method != "GET" else None
        status, answer_headers, raw = server.request(server.admin_url + path, body, method=method, headers=headers)
        assert status == 401, (method, path, status)
        error = json.loads(raw)["error"]
        assert (error["code"], error["retryable"]) == ("admin_token_required", False)
        # a bearer token that is wrong is told apart from none at all
        sent_one = authorization is not None and authorization.startswith("Bearer ") and authorization[7:].strip()
        wanted = "The admin token was not accepted." if sent_one else "This admin endpoint needs the admin token."
        assert error["message"] == wanted, (authorization, error)
        assert answer_headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert answer_headers["WWW-Authenticate"] == 'Bearer realm="wxgate-admin"'
        assert "Set-Cookie" not in answer_headers


def test_with_the_token_unknown_paths_are_404_and_known_ones_answer(server: ConsoleServer) -> None:
    assert server.admin("/admin/api/no-such-thing")[0] == 404
    for path, methods in PATHS.items():
        if "get" in methods and "parameters" not in methods["get"]:
            status, _ = server.admin(path)
            assert status == 200, path


def test_the_openapi_document_lists_every_route() -> None:
    routed = {pattern.replace("\\", "") for pattern, _ in API if not pattern.endswith(".*")}
    assert routed == set(PATHS)
    jsonschema.Draft202012Validator.check_schema({"components": DOC["components"]})


def test_openapi_is_served_behind_the_token(server: ConsoleServer) -> None:
    status, doc = server.admin("/admin/api/openapi.json")
    assert status == 200
    assert doc["paths"].keys() == PATHS.keys()
    assert doc["components"]["securitySchemes"]["adminToken"] == {"type": "http", "scheme": "bearer"}


# --- overview and pipelines -------------------------------------------------------------


def test_overview_counts_the_traffic_by_app_flow_status_and_error_code(server: ConsoleServer) -> None:
    status, body = server.admin("/admin/api/overview")
    assert status == 200
    conforms(body, "Overview")
    assert 0 < body["window_seconds"] <= 300
    apps = {app["name"]: app for app in body["apps"]}
    assert set(apps) == {"demo", "shop", "vault"}
    login = next(f for f in apps["demo"]["flows"] if f["flow"] == "login")
    # traffic(): four logins, three refused codes (and the tests of this module add their own)
    assert login["statuses"]["400"] >= 3
    assert login["errors"]["invalid_code"] == login["statuses"]["400"]
    assert login["requests"] == sum(login["statuses"].values())
    assert login["requests_per_second"] > 0
    assert 0 < login["p50_ms"] <= login["p99_ms"]
    shop_phone = next(f for f in apps["shop"]["flows"] if f["flow"] == "phone")
    assert shop_phone["statuses"] == {"200": 1}
    assert next(f for f in apps["vault"]["flows"] if f["flow"] == "login")["requests"] == 0
    assert apps["vault"]["phone_lookup"]["available"] is False


def test_pipelines_show_steps_in_order_with_timings_failures_and_masked_options(server: ConsoleServer) -> None:
    status, _, raw = server.request(
        server.admin_url + "/admin/api/pipelines", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert status == 200
    body = json.loads(raw)
    conforms(body, "Pipelines")
    assert HASH_KEY not in raw.decode()
    apps = {app["name"]: {f["flow"]: f for f in app["flows"]} for app in body["apps"]}
    login = apps["demo"]["login"]
    assert [s["label"] for s in login["steps"]] == ["code2session", "persist_user", "issue_session", "webhook"]
    code2session = login["steps"][0]
    assert code2session["failures"]["invalid_code"] >= 3
    assert code2session["calls"] >= 7
    assert 0 < code2session["p50_ms"] <= code2session["p99_ms"]
    assert login["steps"][2]["options"]["ttl"] == 7200
    assert login["steps"][1]["failures"] == {}
    persist = next(s for s in apps["shop"]["phone"]["steps"] if s["step"] == "persist_phone")
    assert persist["options"]["store_phone"] == "hashed"
    assert set(persist["options"]["hash_key"]) == {"*"}
    assert re.fullmatch(r"<console test>:\d+", persist["where"])
    session = apps["demo"]["session"]  # a built-in flow: listed, nothing observed yet
    assert session["steps"][0]["p50_ms"] is None or session["steps"][0]["calls"] > 0


# --- users and sessions -----------------------------------------------------------------


def test_find_a_user_by_openid_and_by_plain_or_hashed_phone(served: tuple[ConsoleServer, dict[str, str]]) -> None:
    server, tokens = served
    openid = server.openid(tokens["amy"])
    status, _, raw = server.request(
        server.admin_url + f"/admin/api/users?app=demo&openid={openid}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    body = json.loads(raw)
    conforms(body, "Users")
    ((user,),) = [body["users"]]
    assert user["openid"] == openid
    assert user["user"]["logins"] == 1
    assert user["phones"] == [
        {**user["phones"][0], "masked": "138****5670", "country_code": "86", "stored_as": "plain"}
    ]
    assert "13812345670" not in raw.decode()  # masked only, though the storage keeps the number
    assert len(user["sessions"]) == 1
    assert len(user["sessions"][0]["id"]) == 12

    status, by_phone = server.admin("/admin/api/users?app=demo&phone=" + quote("+86 138-1234-5670"))
    assert status == 200
    assert [u["openid"] for u in by_phone["users"]] == [openid]

    eve = server.openid(tokens["shop:eve"], app="shop")
    status, hashed = server.admin("/admin/api/users?app=shop&phone=" + quote("+8613900001111"))
    assert [u["openid"] for u in hashed["users"]] == [eve]
    assert hashed["users"][0]["phones"][0]["stored_as"] == "hashed"
    # the same number in another app is another user, or none
    assert server.admin("/admin/api/users?app=demo&phone=" + quote("+8613900001111"))[1]["users"] == []


def test_phone_lookup_is_unavailable_where_only_masked_numbers_are_kept(server: ConsoleServer) -> None:
    status, body = server.admin("/admin/api/users?app=vault&phone=" + quote("+8613812345670"))
    assert status == 200
    assert body["users"] == []
    assert body["phone_lookup"]["available"] is False
    assert "masked" in body["phone_lookup"]["reason"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("app=nope&openid=x", 404),
        ("app=demo", 400),
        ("openid=x", 400),
        ("app=demo&openid=a&phone=%2B8613812345670", 400),
        ("app=demo&phone=13812345670", 400),
        ("app=demo&openid=" + quote("a b"), 400),
    ],
)
def test_user_lookups_that_cannot_be_answered(server: ConsoleServer, query: str, status: int) -> None:
    got, body = server.admin("/admin/api/users?" + query)
    assert got == status, body
    conforms(body, "Error")


def test_revoking_ends_every_session_of_the_user_at_once_and_is_logged(server: ConsoleServer) -> None:
    first, second = server.login("revoke-me"), server.login("revoke-me")
    openid = server.openid(first)
    assert server.flow("/v1/demo/session", token=second)[0] == 200
    with structlog.testing.capture_logs() as logs:
        status, body = server.admin("/admin/api/users/revoke", {"app": "demo", "openid": openid})
    assert (status, body) == (200, {"revoked": 2})
    for token in (first, second):
        assert server.flow("/v1/demo/session", token=token)[0] == 401
    (event,) = [e for e in logs if e["event"] == "admin_sessions_revoked"]
    assert (event["app"], event["openid"], event["revoked"]) == ("demo", openid, 2)
    assert server.admin(f"/admin/api/users?app=demo&openid={openid}")[1]["users"][0]["sessions"] == []
    assert server.admin("/admin/api/users/revoke", {"app": "demo", "openid": openid})[1] == {"revoked": 0}


# --- dead letters -------------------------------------------------------------------------


def settled(server: ConsoleServer) -> bool:
    counts = server.admin("/admin/api/events")[1]["counts"]
    return bool(counts["pending"] == counts["delivering"] == 0)


def dead_letter(server: ConsoleServer, crm: Receiver, user: str) -> dict[str, Any]:
    wait_for(lambda: settled(server))  # earlier deliveries done: the next one is this login's
    crm.script = [400]  # the receiver refuses the next delivery; max_attempts: 1 makes it dead
    server.login(user)
    found: list[dict[str, Any]] = []

    def dead() -> bool:
        found[:] = server.admin("/admin/api/events?status=dead")[1]["events"]["dead"]
        return bool(found)

    wait_for(dead)
    (event,) = found
    return event


def test_a_retried_dead_letter_is_delivered_to_the_receiver(server: ConsoleServer, crm: Receiver) -> None:
    event = dead_letter(server, crm, "dora-dead")
    assert event["last_error"].startswith("HTTP 400")
    assert event["type"] == "user.login"
    assert event["endpoint"] == "crm"
    _status, listing = server.admin("/admin/api/events")
    conforms(listing, "Events")
    assert listing["counts"]["dead"] == 1
    assert set(listing["events"]) == {"pending", "dead"}
    delivered_before = len(crm.delivered())
    with structlog.testing.capture_logs() as logs:
        assert server.admin("/admin/api/events/retry", {"ids": [event["id"]]}) == (200, {"requeued": 1})
    wait_for(lambda: len(crm.delivered()) == delivered_before + 1)
    # the refused delivery and the retried one: the same event, the second time accepted
    same = [
        c for c in crm.received if c["headers"]["X-Wxgate-Event-Id"] == crm.received[-1]["headers"]["X-Wxgate-Event-Id"]
    ]
    assert [c["status"] for c in same] == [400, 200]
    assert server.admin("/admin/api/events?status=dead")[1]["events"]["dead"] == []
    (line,) = [e for e in logs if e["event"] == "admin_events_retried"]
    assert (line["requeued"], line["ids"]) == (1, [event["id"]])


def test_purging_dead_letters_only(server: ConsoleServer, crm: Receiver) -> None:
    dead_letter(server, crm, "purge-me")
    counts = server.admin("/admin/api/events")[1]["counts"]
    with structlog.testing.capture_logs() as logs:
        status, body = server.admin("/admin/api/events/purge", {"older_than_seconds": 0})
    assert (status, body) == (200, {"purged": 1})
    after = server.admin("/admin/api/events")[1]["counts"]
    assert after["dead"] == 0
    assert after["delivered"] == counts["delivered"]
    assert [e["purged"] for e in logs if e["event"] == "admin_events_purged"] == [1]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/api/events/retry", {}),
        ("/admin/api/events/retry", {"ids": [], "all": False}),
        ("/admin/api/events/retry", {"ids": "abc"}),
        ("/admin/api/events/retry", {"ids": ["a"], "all": True}),
        ("/admin/api/events/purge", {"older_than_seconds": -1}),
        ("/admin/api/events/purge", {"older_than_seconds": "7d"}),
        ("/admin/api/users/revoke", {"app": "demo"}),
        ("/admin/api/users/revoke", [1, 2]),
    ],
)
def test_malformed_changes_are_refused(server: ConsoleServer, path: str, body: Any) -> None:
    status, answer = server.admin(path, body)
    assert status == 400, answer
    conforms(answer, "Error")


# --- configuration --------------------------------------------------------------------------

DRAFT = """\
server:
  port: 8080
apps:
  demo:
    appid: wx0000000000demo0
    secret: ${CONSOLE_DRAFT_SECRET}
    upstream: sandbox
"""


def check(server: ConsoleServer, text: str) -> dict[str, Any]:
    status, body = server.admin("/admin/api/config/check", text.encode())
    assert status == 200, body
    conforms(body, "DraftCheck")
    return dict(body)


def test_a_draft_is_checked_with_an_empty_environment(server: ConsoleServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSOLE_DRAFT_SECRET", "server-side-secret-value-42")
    body = check(server, DRAFT)
    assert body["valid"] is False
    (error,) = body["errors"]
    assert error["line"] == 6
    assert "CONSOLE_DRAFT_SECRET is not set" in error["message"]
    assert "server-side-secret-value-42" not in json.dumps(body)
    assert check(server, DRAFT.replace("${CONSOLE_DRAFT_SECRET}", "${CONSOLE_DRAFT_SECRET:-from-the-draft}")) == {
        "valid": True,
        "errors": [],
    }


def test_draft_errors_are_validates_with_lines_and_echo_no_value(server: ConsoleServer, tmp_path: Path) -> None:
    draft = DRAFT.replace("${CONSOLE_DRAFT_SECRET}", "s3cr3t-in-the-draft").replace("port: 8080", "port: not-a-port-x9")
    draft += "    pipelines:\n      login: [code2session, no_such_step]\n"
    body = check(server, draft)
    assert body["valid"] is False
    assert "not-a-port-x9" not in json.dumps(body)
    assert "s3cr3t-in-the-draft" not in json.dumps(body)
    (error,) = body["errors"]
    assert error["line"] == 2
    assert error["message"].startswith("draft.yaml:2: server.port: ")
    # the same message as `wxgate validate` prints, less the value it repeats
    path = tmp_path / "draft.yaml"
    path.write_text(draft)
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    assert error["message"].removeprefix("draft.yaml") in re.sub(r" \(got .*\)", "", result.stderr)

    fixed = draft.replace("not-a-port-x9", "8080")
    (step_error,) = check(server, fixed)["errors"]
    assert step_error["line"] == 9
    assert "unknown step 'no_such_step'" in step_error["message"]
    assert check(server, "apps: [\n")["errors"][0]["line"] == 2  # not YAML: where the parser stopped


def test_config_shows_the_running_digest(server: ConsoleServer) -> None:
    status, body = server.admin("/admin/api/config")
    assert status == 200
    conforms(body, "Config")
    assert server.gateway is not None
    assert body["digest"] == server.gateway.config.digest
    assert body["reloads"] == {"ok": 0, "refused": 0}
    assert body["last_reload"] is None
    assert server.admin("/admin/api/config/check", b"  ")[0] == 400


# --- the page's files -----------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "style" or "style" in found or any(name.startswith("on") for name in found):
            self.problems.append(f"inline style or handler: <{tag} {found}>")
        if tag == "script" and not found.get("src"):
            self.problems.append("inline script")
        self.refs += [value for name, value in attrs if name in ("src", "href") and value]


def test_the_page_loads_without_the_token_with_its_security_headers(server: ConsoleServer) -> None:
    status, headers, raw = server.request(server.admin_url + "/admin/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    page = _Page()
    page.feed(raw.decode())
    assert page.problems == []
    assert page.refs
    assert all(not re.match(r"[a-z]+://|//", ref) for ref in page.refs), page.refs
    for ref in page.refs:
        if ref.startswith("data:"):
            continue
        status, headers, _ = server.request(server.admin_url + "/admin/" + ref)
        assert status == 200, ref
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    status, headers, _ = server.request(server.admin_url + "/admin/no-such-file.js")
    assert status == 404
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    status, headers, _ = server.request(server.admin_url + "/admin/../config/gateway.yaml")
    assert status in (403, 404)


def test_the_page_names_no_other_host() -> None:
    for name in ("index.html", "console.js", "console.css"):
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text), name
    assert "innerHTML" not in (STATIC_DIR / "console.js").read_text()


def test_the_console_is_off_without_a_token(crm: Receiver) -> None:
    text = console_config(crm.url).replace(f"token: {ADMIN_TOKEN}", "token: ''")
    server = ConsoleServer(text).start()
    try:
        for path in ("/admin/", "/admin/api/overview"):
            assert server.request(server.admin_url + path, headers={"Authorization": "Bearer "})[0] == 404
    finally:
        server.stop()


# --- the window's arithmetic ---------------------------------------------------------------


def test_bucket_quantile_interpolates_as_histogram_quantile() -> None:
    buckets = {0.001: 0.0, 0.01: 50.0, 0.1: 100.0, float("inf"): 100.0}
    assert bucket_quantile(0.5, buckets) == 10.0  # the 50th of 100 at the top of (1, 10] ms
    assert bucket_quantile(0.25, buckets) == 5.5
    assert bucket_quantile(0.99, buckets) == 98.2
    assert bucket_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert bucket_quantile(0.99, {0.1: 1.0, float("inf"): 10.0}) == 100.0  # beyond the last bound


def test_the_window_is_the_last_five_minutes_once_it_has_them() -> None:
    now = [1000.0]
    value = [0.0]

    def source() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {("wxgate_requests_total", (("app", "a"),)): value[0]}

    window = MetricsWindow(source, span=300, every=10, clock=lambda: now[0])
    for _ in range(60):  # 10 minutes, one request a second
        now[0] += 10
        value[0] += 10
        window.tick()
    seen = window.window()
    assert seen.seconds == 300
    assert seen.total("wxgate_requests_total", {"app": "a"}) == 300
    assert len(window.samples) <= 32  # bounded: one sample per 10 s of the window
    fresh = MetricsWindow(source, clock=lambda: now[0] - 50)
    assert fresh.window().total("wxgate_requests_total", {}) == value[0]  # since the start: all of it


# --- the same on the MongoDB storage ----------------------------------------------------------


def test_phone_lookup_and_revoking_on_the_mongo_storage(crm: Receiver, mongo_uri: str) -> None:
    from gateway.sealing import new_key_text

    database = "console" + uuid.uuid4().hex[:10]
    storage = (
        f"{{plugin: mongo, options: {{uri: '{mongo_uri}', database: {database}, encryption_key: '{new_key_text()}'}}}}"
    )
    text = console_config(crm.url).replace("storage: {plugin: memory}", f"storage: {storage}")
    server = ConsoleServer(text).start()
    try:
        plain, hashed = server.login("mia"), server.login("mia", app="shop")
        server.bind_phone("mia", plain, "+8613700000001")
        server.bind_phone("mia", hashed, "+8613700000001", app="shop")
        for app, token, stored_as in (("demo", plain, "plain"), ("shop", hashed, "hashed")):
            status, body = server.admin(f"/admin/api/users?app={app}&phone=" + quote("+8613700000001"))
            assert status == 200, body
            (user,) = body["users"]
            assert user["openid"] == server.openid(token, app=app)
            assert user["phones"][0]["stored_as"] == stored_as
            assert user["phones"][0]["masked"] == "137****0001"
        openid = server.openid(plain)
        assert server.admin("/admin/api/users/revoke", {"app": "demo", "openid": openid}) == (200, {"revoked": 1})
        assert server.flow("/v1/demo/session", token=plain)[0] == 401
        assert server.flow("/v1/shop/session", token=hashed)[0] == 200  # another app's session stays
    finally:
        server.stop()


# --- several worker processes ----------------------------------------------------------------


def test_figures_are_the_sum_over_worker_processes(tmp_path: Path, mongo_uri: str) -> None:
    """`wxgate serve --processes 2`: whichever worker answers the overview counts every
    worker's requests (prometheus-client's multi-process files)."""
    from tests.test_multiprocess import Cluster, login

    cluster = Cluster(tmp_path, mongo_uri)
    try:
        gateway = cluster.gateway("--processes", "2", admin=f"host: 127.0.0.1, token: {ADMIN_TOKEN}")
        for i in range(12):
            login(cluster, gateway, f"worker-user-{i}")  # a new connection each: the kernel spreads them
        admin_url = cluster.admin_url
        seen = []
        for _ in range(6):
            request = urllib.request.Request(
                admin_url + "/admin/api/overview", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                (app,) = json.loads(response.read())["apps"]
            seen.append(next(f for f in app["flows"] if f["flow"] == "login")["statuses"])
    finally:
        outputs = cluster.stop()
    assert seen == [{"200": 12}] * 6
    served = {
        line["pid"]
        for output in outputs
        for line in map(json.loads, (text for text in output.splitlines() if text.startswith("{")))
        if line.get("event") == "request" and line.get("flow") == "login"
    }
    assert len(served) == 2, "the logins all went to one worker: the sum was not tested"


def test_config_tells_the_last_reload_and_why_the_file_would_be_refused(crm: Receiver, tmp_path: Path) -> None:
    from gateway.server import reload_from_file

    path = tmp_path / "gw.yaml"
    server = ConsoleServer(console_config(crm.url), path=path).start()
    try:
        assert server.gateway is not None
        first = server.gateway.config.digest
        assert server.admin("/admin/api/config")[1]["file_digest"] == first
        path.write_text(path.read_text() + "# a comment: another digest\n")
        assert server.in_loop(reload_from_file, server.gateway, str(path)) is True
        body = server.admin("/admin/api/config")[1]
        conforms(body, "Config")
        assert body["reloads"] == {"ok": 1, "refused": 0}
        assert body["last_reload"]["previous_digest"] == first
        assert body["last_reload"]["digest"] == body["digest"] == body["file_digest"] != first
        assert body["file_errors"] == []

        lines = path.read_text().splitlines()
        broken = [line.replace("max_attempts: 1", "max_attempts: many") for line in lines]
        path.write_text("\n".join(broken) + "\n")
        assert server.in_loop(reload_from_file, server.gateway, str(path)) is False
        body = server.admin("/admin/api/config")[1]
        assert body["reloads"] == {"ok": 1, "refused": 1}
        assert body["file_digest"] != body["digest"]
        (error,) = body["file_errors"]
        line = next(i for i, text in enumerate(broken, 1) if "max_attempts" in text)
        assert error["line"] == line
        assert error["message"].startswith(f"{path}:{line}: webhooks.max_attempts: ")
        assert "many" not in error["message"]
    finally:
        server.stop()
