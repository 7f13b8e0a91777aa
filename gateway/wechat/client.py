"""Async client for the WeChat server API, bound to one app.

Every WeChat answer goes through :meth:`WeChatClient._call`, which turns transport
trouble and errcodes into :mod:`gateway.errors` classes. Calls that consume a
single-use code are never retried; calls rejected for a stale access token are
retried once with a fresh token. URLs carry the app secret and access tokens, so
they are never logged: only the API's name is.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.simple_httpclient import HTTPTimeoutError

from gateway.config import AppConfig
from gateway.errors import (
    CloudDataFailed,
    GatewayError,
    InvalidCode,
    InvalidPhoneCode,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
    error_for_errcode,
)
from gateway.metrics import Metrics
from gateway.secret import Secret
from gateway.storage import Storage
from gateway.wechat.circuit import CircuitBreaker
from gateway.wechat.crypto import checksession_signature
from gateway.wechat.tokens import AccessTokens

TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
CURLE_OPERATION_TIMEDOUT = 28


class WeChatClient:
    def __init__(
        self,
        app: AppConfig,
        base_url: str,
        storage: Storage,
        http: AsyncHTTPClient | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.base_url = base_url.rstrip("/")
        self._http = http
        self.metrics = metrics
        self.circuit = CircuitBreaker(app.circuit_failures, app.circuit_cooldown)
        self.tokens = AccessTokens(app.appid, storage, self.fetch_access_token, metrics)
        self.calls: dict[str, int] = {}

    @property
    def http(self) -> AsyncHTTPClient:
        if self._http is None:
            self._http = AsyncHTTPClient()
        return self._http

    async def code2session(self, code: str) -> dict[str, Any]:
        """Exchange a wx.login code; returns openid, session_key and maybe unionid."""
        query = {
            "appid": self.app.appid,
            "secret": self.app.secret.get_secret_value(),
            "js_code": code,
            "grant_type": "authorization_code",
        }
        answer = await self._call("jscode2session", "GET", "/sns/jscode2session", query)
        if not isinstance(answer.get("openid"), str) or not isinstance(answer.get("session_key"), str):
            raise UpstreamError(log_detail="jscode2session: answer without openid/session_key")
        return answer

    async def fetch_access_token(self) -> tuple[str, int]:
        """A token from stable_token (normal mode: it does not invalidate the previous one)."""
        body = {
            "grant_type": "client_credential",
            "appid": self.app.appid,
            "secret": self.app.secret.get_secret_value(),
            "force_refresh": False,
        }
        answer = await self._call("stable_token", "POST", "/cgi-bin/stable_token", body=body)
        token, expires_in = answer.get("access_token"), answer.get("expires_in", 7200)
        if not isinstance(token, str) or not token:
            raise UpstreamError(log_detail="stable_token: answer without access_token")
        return token, expires_in if isinstance(expires_in, int) and expires_in > 0 else 7200

    async def get_phone_number(self, code: str, openid: str | None = None) -> dict[str, Any]:
        """The newer flow: a one-time phone code from the button -> phone_info."""
        body: dict[str, Any] = {"code": code}
        if openid:
            body["openid"] = openid
        try:
            answer = await self._call_with_token(
                "getuserphonenumber", "POST", "/wxa/business/getuserphonenumber", {}, body
            )
        except InvalidCode as exc:  # 40029 here is about the phone code, not a login code
            raise InvalidPhoneCode(log_detail=exc.log_detail) from None
        info = answer.get("phone_info")
        if not isinstance(info, dict):
            raise UpstreamError(log_detail="getuserphonenumber: answer without phone_info")
        return info

    async def get_open_data(self, cloud_id: str, openid: str | None = None) -> dict[str, Any]:
        """A cloudID's open data (``data`` of its entry: what decryption would give).

        ``openid`` makes WeChat check that the cloudID is that user's (errcode 40003).
        WeChat documents ``json`` as a JSON string and shows it as an object too: both are
        read. Any errcode but the app-wide ones, and an answer without this cloudID's
        entry, is cloud_data_failed.
        """
        query = {"openid": openid} if openid else {}
        answer = await self._call_with_token(
            "getopendata", "POST", "/wxa/getopendata", query, {"cloudid_list": [cloud_id]}, CloudDataFailed
        )
        entries = answer.get("data_list")
        listed = entries if isinstance(entries, list) else []
        entry = next((e for e in listed if isinstance(e, dict) and e.get("cloud_id") == cloud_id), None)
        if entry is None:
            raise CloudDataFailed(log_detail="getopendata: answer without an entry for the cloudID")
        payload = entry.get("json")
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError:
                raise UpstreamError(log_detail="getopendata: json is not JSON") from None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            raise UpstreamError(log_detail="getopendata: entry without a data object")
        return data

    async def check_session(self, openid: str, session_key: Secret) -> None:
        """Raises SessionKeyStale when WeChat no longer holds this session_key."""
        query = {
            "openid": openid,
            "signature": checksession_signature(session_key.reveal()),
            "sig_method": "hmac_sha256",
        }
        await self._call_with_token("checksession", "GET", "/wxa/checksession", query)

    async def _call_with_token(
        self,
        api: str,
        method: str,
        path: str,
        query: dict[str, str],
        body: dict[str, Any] | None = None,
        otherwise: type[GatewayError] | None = None,
    ) -> dict[str, Any]:
        token = await self.tokens.get()
        try:
            return await self._call(api, method, path, {**query, "access_token": token.reveal()}, body, otherwise)
        except _StaleToken:
            # Invalidated elsewhere (another server refreshed) or expired: a fresh one, resent once.
            token = await self.tokens.get(reject=token.reveal())
            return await self._call(api, method, path, {**query, "access_token": token.reveal()}, body, otherwise)

    async def _call(
        self,
        api: str,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        otherwise: type[GatewayError] | None = None,
    ) -> dict[str, Any]:
        """``otherwise``: see :func:`gateway.errors.error_for_errcode`."""
        self.circuit.before_call()  # open: fail fast with 503 upstream_circuit_open
        self.calls[api] = self.calls.get(api, 0) + 1
        url = self.base_url + path + ("?" + urlencode(query) if query else "")
        request = HTTPRequest(
            url,
            method=method,
            body=json.dumps(body) if body is not None else None,
            headers={"Content-Type": "application/json"} if body is not None else None,
            connect_timeout=self.app.timeout,
            request_timeout=self.app.timeout,
            follow_redirects=False,
        )
        try:
            response = await self.http.fetch(request)
        except HTTPClientError as exc:
            self.circuit.failure()
            if _timed_out(exc):
                self._count(api, "timeout")
                raise UpstreamTimeout(log_detail=f"{api}: no answer within {self.app.timeout}s") from None
            self._count(api, f"http_{exc.code}")
            if exc.code == 599:
                raise UpstreamUnreachable(log_detail=f"{api}: {exc}") from None
            raise UpstreamError(log_detail=f"{api}: HTTP {exc.code}") from None
        except (OSError, StreamClosedError) as exc:
            self.circuit.failure()
            self._count(api, "unreachable")
            raise UpstreamUnreachable(log_detail=f"{api}: {type(exc).__name__}: {exc}") from None
        except BaseException:
            # cancelled (the request's timeout) or a bug: no verdict, but a half-open
            # circuit's trial slot must not stay taken, or the circuit never closes
            self.circuit.abandoned()
            raise
        try:
            answer = json.loads(response.body or b"")
        except ValueError:
            self.circuit.failure()
            raise UpstreamError(log_detail=f"{api}: answer is not JSON") from None
        if not isinstance(answer, dict):
            self.circuit.failure()
            raise UpstreamError(log_detail=f"{api}: answer is not a JSON object")
        errcode = answer.get("errcode", 0)
        if errcode == -1:  # system busy: WeChat is in trouble, not the request
            self.circuit.failure()
        else:
            self.circuit.success()
        self._count(api, str(errcode if errcode is not None else 0))
        if errcode in (0, None):
            return answer
        errmsg = str(answer.get("errmsg", ""))
        if errcode in TOKEN_ERRCODES:
            raise _StaleToken(log_detail=f"{api}: errcode {errcode} {errmsg}")
        if not isinstance(errcode, int):
            raise UpstreamError(log_detail=f"{api}: errcode is not an integer")
        raise error_for_errcode(errcode, errmsg, api, otherwise)

    def _count(self, api: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.upstream(api, outcome)


def _timed_out(exc: HTTPClientError) -> bool:
    # simple_httpclient raises HTTPTimeoutError; curl_httpclient a CurlError with
    # libcurl's CURLE_OPERATION_TIMEDOUT (28)
    return isinstance(exc, HTTPTimeoutError) or getattr(exc, "errno", None) == CURLE_OPERATION_TIMEDOUT


class _StaleToken(UpstreamError):
    """40001/40014/42001: refreshed and resent once; a second one is an upstream error."""
