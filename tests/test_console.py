"""The console's pages in a real headless Chromium (Debian's ``chromium``, driven by
Playwright with ``executable_path``: no browser download), against a served gateway and
its admin listener (tests/console_harness.py). Each test saves a screenshot in its
temporary directory and fails on any Content-Security-Policy violation or script error."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console_harness import ConsoleServer, console_config, traffic
from tests.webhook_receiver import Receiver

CHROMIUM = "/usr/bin/chromium"

if shutil.which(CHROMIUM) is None and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Dialog, Page, sync_playwright  # noqa: E402 (after the skip)

# Recorded by the page itself: a violation of the policy fires this event in the document.
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.mark.usefixtures("receiver")
class TestConsole:
    crm: Receiver
    server: ConsoleServer
    page: Page
    problems: list[str]

    @pytest.fixture(autouse=True)
    def console(self, receiver: None, browser: Browser, tmp_path: Path) -> Iterator[None]:
        self.server = ConsoleServer(console_config(self.crm.url)).start()
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.problems = []
        self.page.add_init_script(WATCH_CSP)
        self.page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        self.page.on("console", self._console_message)
        self.page.on("dialog", self._no_native_dialog)
        self.shots = tmp_path
        try:
            yield
            self.page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
            self.problems += [f"CSP: {v}" for v in self.page.evaluate("window.__csp")]
            assert self.problems == []
        finally:
            self.page.close()
            self.server.stop()

    def _console_message(self, message: Any) -> None:
        # a refused token's 401 is logged by Chromium as a failed load: expected, not a fault
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console: {message.text}")

    def _no_native_dialog(self, dialog: Dialog) -> None:
        self.problems.append(f"native dialog: {dialog.message}")
        dialog.dismiss()

    def sign_in(self) -> None:
        self.page.goto(self.server.admin_url + "/admin/")
        self.page.fill("#token", self.server.token)
        self.page.click("#sign-in")
        self.page.wait_for_selector("#overview-tables table")

    def view(self, name: str) -> None:
        self.page.click(f"nav [data-view={name}]")

    def confirm(self) -> None:
        self.page.wait_for_selector("#confirm[open]")
        self.page.click("#confirm-ok")

    # --------------------------------------------------------------------------------------

    def test_sign_in_refuses_a_wrong_token_and_keeps_none(self) -> None:
        self.page.goto(self.server.admin_url + "/admin/")
        assert self.page.is_hidden("#console")
        self.page.fill("#token", "not-the-admin-token-0000")
        self.page.click("#sign-in")
        self.page.wait_for_selector("#sign-in-error:has-text('refused')")
        assert self.page.is_hidden("#console")
        self.sign_in()
        assert self.page.is_visible("#console")
        assert self.page.input_value("#token") == ""  # not left in the form
        storage = self.page.evaluate("[document.cookie, localStorage.length, sessionStorage.length]")
        assert storage == ["", 0, 0]
        self.page.screenshot(path=str(self.shots / "overview.png"))

    def test_a_pipeline_shows_its_steps_with_timings_after_traffic(self) -> None:
        traffic(self.server)
        self.sign_in()
        login = self.page.locator("#overview-tables .flow-table tr", has_text="login").first
        assert re.search(r"invalid_code: 3", login.inner_text())
        self.view("pipelines")
        row = "#pipeline-tables [data-flow=login] tr[data-step=code2session]"
        self.page.wait_for_selector(row)
        cells = self.page.locator(f"{row} td").all_inner_texts()
        assert cells[1] == "code2session"
        assert re.fullmatch(r"\d+\.\d+", cells[4])  # p50 ms
        assert re.fullmatch(r"\d+\.\d+", cells[5])  # p99 ms
        assert cells[6] == "invalid_code: 3"
        steps = self.page.locator("#pipeline-tables [data-flow=login] tr[data-step]").all_inner_texts()
        assert [s.split("\t")[1] for s in steps] == ["code2session", "persist_user", "issue_session", "webhook"]
        # the diagram: one node per flow and one per step, drawn by cytoscape on canvas
        _, pipelines = self.server.admin("/admin/api/pipelines")
        demo = next(a for a in pipelines["apps"] if a["name"] == "demo")
        nodes = sum(1 + len(flow["steps"]) for flow in demo["flows"])
        assert self.page.get_attribute("#diagram", "data-nodes") == str(nodes)
        assert self.page.locator("#diagram canvas").count() > 0
        self.page.screenshot(path=str(self.shots / "pipelines.png"), full_page=True)

    def test_find_a_user_by_phone_and_revoke_their_sessions(self) -> None:
        token = self.server.login("zoe")
        self.server.bind_phone("zoe", token, "+8613800000042")
        assert self.server.flow("/v1/demo/session", token=token)[0] == 200
        self.sign_in()
        self.view("users")
        self.page.select_option("#user-app", "vault")
        self.page.select_option("#user-by", "phone")
        assert "unavailable" in self.page.inner_text("#phone-lookup")
        assert self.page.is_disabled("#find-user")
        self.page.select_option("#user-app", "demo")
        self.page.fill("#user-query", "+86 138 0000 0042")
        self.page.click("#find-user")
        card = self.page.wait_for_selector(".user")
        assert card is not None
        text = card.inner_text()
        assert "138****0042" in text
        assert "13800000042" not in self.page.content()
        assert self.page.locator(".user .session-table tbody tr").count() == 1
        self.page.screenshot(path=str(self.shots / "user.png"), full_page=True)
        self.page.click(".user .revoke")
        self.confirm()
        self.page.wait_for_selector(".user .sessions-none")
        assert "1 session(s) revoked" in self.page.inner_text("#status")
        assert self.server.flow("/v1/demo/session", token=token)[0] == 401

    def test_retry_a_dead_letter_and_see_it_delivered(self) -> None:
        self.crm.script = [400]  # the receiver refuses the first delivery: dead at once (max_attempts: 1)
        self.server.login("dead-letter-user")
        wait_for(lambda: self.server.admin("/admin/api/events")[1]["counts"]["dead"] == 1)
        self.sign_in()
        self.view("events")
        row = self.page.wait_for_selector("#dead-events tr[data-event]")
        assert row is not None
        assert "HTTP 400" in row.inner_text()
        assert self.crm.delivered() == []
        self.page.screenshot(path=str(self.shots / "dead-letter.png"), full_page=True)
        self.page.click("#dead-events button.retry")
        self.confirm()
        wait_for(lambda: len(self.crm.delivered()) == 1)
        assert self.crm.delivered()[0]["type"] == "user.login"
        self.page.click("#refresh")
        self.page.wait_for_selector("#dead-events:has-text('No dead letters')")

    def test_a_broken_draft_shows_its_line_number(self) -> None:
        self.sign_in()
        self.view("config")
        self.page.wait_for_selector("#config-facts dd")
        assert self.server.gateway is not None
        assert self.server.gateway.config.digest in self.page.inner_text("#config-facts")
        draft = "\n".join(
            [
                "server:",
                "  port: 8080",
                "apps:",
                "  demo:",
                "    appid: wx0000000000demo0",
                "    secret: ${DRAFT_SECRET:-x}",
                "    upstrem: sandbox",
            ]
        )
        self.page.fill("#draft", draft)
        self.page.click("#check-draft")
        self.page.wait_for_selector(".draft-error")
        errors = self.page.locator(".draft-error").all_inner_texts()
        # as `wxgate validate` says it: the key misspelled where it is, the one missing where its app is
        assert [e.split("draft.yaml")[0].strip() for e in errors] == ["line 4", "line 7"]
        assert "unknown key 'upstrem'" in errors[1]
        assert "required key is missing" in errors[0]
        self.page.fill("#draft", draft.replace("upstrem", "upstream"))
        self.page.click("#check-draft")
        self.page.wait_for_selector("#draft-result .valid")
        self.page.screenshot(path=str(self.shots / "config.png"), full_page=True)

    def test_a_policy_violation_would_be_caught(self) -> None:
        """The watch itself: an inline style and an inline script are refused and seen."""
        self.sign_in()
        self.page.evaluate(
            """() => {
                const style = document.createElement("style");
                style.textContent = "body { color: red }";
                document.head.append(style);
                const script = document.createElement("script");
                script.textContent = "window.__ran = true";
                document.head.append(script);
            }"""
        )
        self.page.wait_for_function("window.__csp.length >= 2")
        assert self.page.evaluate("window.__ran === undefined")
        violations = self.page.evaluate("window.__csp.splice(0)")
        assert {v.split()[0] for v in violations} == {"style-src-elem", "script-src-elem"}
        self.problems = [p for p in self.problems if "Content Security Policy" not in p]
