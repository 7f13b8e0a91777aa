"""server.trusted_proxies: the client address behind proxies, and only behind them.

The rule (gateway.client_address) on its own, then over real HTTP: a per-IP rate limit
counts the address the rule gives, so a client that sets X-Forwarded-For itself gains
nothing unless it connects from a trusted proxy."""

from __future__ import annotations

from typing import Any

import pytest
import tornado.httputil

from gateway.client_address import TrustedProxies
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.testing import GatewayTestCase


def headers(*pairs: tuple[str, str]) -> tornado.httputil.HTTPHeaders:
    out = tornado.httputil.HTTPHeaders()
    for name, value in pairs:
        out.add(name, value)
    return out


PROXIES = TrustedProxies(["127.0.0.1/32", "10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "given", "expected"),
    [
        # a direct client: its headers are ignored, whatever they say
        ("203.0.113.7", [("X-Forwarded-For", "1.2.3.4")], "203.0.113.7"),
        ("203.0.113.7", [("X-Real-Ip", "1.2.3.4")], "203.0.113.7"),
        # behind one proxy
        ("127.0.0.1", [("X-Forwarded-For", "198.51.100.9")], "198.51.100.9"),
        # the client's own entry (left) is not believed: the right-most untrusted one is the client
        ("127.0.0.1", [("X-Forwarded-For", "6.6.6.6, 198.51.100.9")], "198.51.100.9"),
        # a chain of trusted proxies is skipped
        ("127.0.0.1", [("X-Forwarded-For", "6.6.6.6, 198.51.100.9, 10.1.2.3")], "198.51.100.9"),
        # several header lines are one list, in order
        ("127.0.0.1", [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.9")], "198.51.100.9"),
        # every hop trusted: the left-most
        ("127.0.0.1", [("X-Forwarded-For", "10.0.0.5, 10.0.0.6")], "10.0.0.5"),
        # garbage: the last trusted hop answers for it
        ("127.0.0.1", [("X-Forwarded-For", "not-an-ip, 10.0.0.6")], "10.0.0.6"),
        ("127.0.0.1", [("X-Forwarded-For", "not-an-ip")], "127.0.0.1"),
        # X-Real-Ip only without X-Forwarded-For
        ("127.0.0.1", [("X-Real-Ip", "198.51.100.9")], "198.51.100.9"),
        ("127.0.0.1", [("X-Real-Ip", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.9")], "198.51.100.9"),
        ("127.0.0.1", [("X-Real-Ip", "nonsense")], "127.0.0.1"),
        ("127.0.0.1", [], "127.0.0.1"),
        # IPv6, and an IPv4 peer seen through a dual-stack socket
        ("::ffff:127.0.0.1", [("X-Forwarded-For", "2001:db8::1")], "2001:db8::1"),
    ],
)
def test_the_right_most_untrusted_address_is_the_client(peer: str, given: list[tuple[str, str]], expected: str) -> None:
    assert PROXIES.client_address(peer, headers(*given)) == expected


def test_no_trusted_proxy_means_the_peer() -> None:
    assert TrustedProxies([]).client_address("127.0.0.1", headers(("X-Forwarded-For", "1.2.3.4"))) == "127.0.0.1"


APPS = "apps:\n  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}\n"


def test_trust_proxy_headers_is_refused_with_the_new_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("server:\n  log_format: json\n  trust_proxy_headers: true\n" + APPS, "gw.yaml")
    message = str(caught.value)
    assert message.startswith("gw.yaml:3: server.trust_proxy_headers:")
    assert "trusted_proxies" in message


def test_a_trusted_proxy_must_be_an_address_or_cidr() -> None:
    with pytest.raises(ConfigError, match=r"gw.yaml:2: server.trusted_proxies: 'proxy.local' is not an address"):
        parse_config("server:\n  trusted_proxies: [10.0.0.0/8, proxy.local]\n" + APPS, "gw.yaml")


LIMITED = """
storage: {{plugin: memory}}
server: {{trusted_proxies: [{proxies}]}}
pipelines:
  login: [{{rate_limit: {{per: ip, limit: 1, window: 600}}}}, code2session, issue_session]
apps:
  demo: {{appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}}
"""


class _Limited(GatewayTestCase):
    proxies = ""

    def get_config(self) -> Any:
        self.config_text = LIMITED.format(proxies=self.proxies)
        return super().get_config()

    def login_from(self, **sent: str) -> int:
        """A login with an unknown code: 400 when the rate limit let it through, 429 when not."""
        return self.call("/v1/demo/login", {"code": "unknown-code"}, headers=sent)[0]


class BehindATrustedProxyTest(_Limited):
    proxies = "127.0.0.1/32"  # the test client connects from 127.0.0.1: it plays the proxy

    def test_each_forwarded_client_has_its_own_limit(self) -> None:
        assert self.login_from(**{"X-Forwarded-For": "198.51.100.1"}) == 400
        assert self.login_from(**{"X-Forwarded-For": "198.51.100.1"}) == 429
        assert self.login_from(**{"X-Forwarded-For": "198.51.100.2"}) == 400
        assert self.login_from(**{"X-Real-Ip": "198.51.100.3"}) == 400

    def test_a_client_cannot_escape_by_writing_its_own_entry(self) -> None:
        assert self.login_from(**{"X-Forwarded-For": "198.51.100.5"}) == 400
        # the client wrote 7.7.7.7, the proxy appended the address it saw
        assert self.login_from(**{"X-Forwarded-For": "7.7.7.7, 198.51.100.5"}) == 429


class DirectClientsTest(_Limited):
    proxies = "10.0.0.0/8"  # the test client (127.0.0.1) is not a proxy

    def test_headers_from_an_untrusted_peer_are_ignored(self) -> None:
        assert self.login_from(**{"X-Forwarded-For": "198.51.100.1"}) == 400
        assert self.login_from(**{"X-Forwarded-For": "198.51.100.2"}) == 429
        assert self.login_from(**{"X-Real-Ip": "198.51.100.3"}) == 429
