"""HTTP handlers of the sandbox: WeChat's API (upstream) and the device simulator.

Upstream handlers answer like WeChat: HTTP 200 with ``errcode``/``errmsg`` on
failure. Device handlers play the phone: ``wx.login`` and ``getPhoneNumber`` as the
mini program's base library would return them, encrypted with real AES.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import tornado.routing
import tornado.web

from gateway.errors import StorageUnavailable
from gateway.logs import get_logger
from gateway.phones import parse_e164
from gateway.sandbox.world import Fault, SandboxApp, SandboxWorld, SimUser, version_below
from gateway.wechat import crypto

MASKED_BELOW = (1, 9, 1)
PHONE_CODE_FROM = (2, 21, 2)
CLOUD_ID_FROM = (2, 8, 0)
log = get_logger("wxgate.sandbox")
UPSTREAM_APIS = ("jscode2session", "stable_token", "token", "getuserphonenumber", "checksession", "getopendata")


class _SandboxHandler(tornado.web.RequestHandler):
    world: SandboxWorld

    def initialize(self, world: SandboxWorld) -> None:
        self.world = world

    def check_xsrf_cookie(self) -> None:  # an API, not a browser form
        pass

    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError:
            raise tornado.web.HTTPError(400, reason="body is not JSON") from None
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, reason="body is not a JSON object")
        return body

    def answer(self, payload: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(payload, ensure_ascii=False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, StorageUnavailable):
            self.storage_unavailable()
            return
        reason = exc.reason if isinstance(exc, tornado.web.HTTPError) and exc.reason else self._reason
        self.answer({"error": {"code": "sandbox_error", "message": reason}}, status_code)

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        if isinstance(value, StorageUnavailable):  # an outage, not a bug: no traceback
            log.warning("sandbox_storage_unavailable", path=self.request.path, detail=value.log_detail)
            return
        super().log_exception(typ, value, tb)

    def storage_unavailable(self) -> None:
        """The simulated users or tokens could not be read from the gateway's storage."""
        self.set_header("Retry-After", str(StorageUnavailable.retry_after))
        message = "the sandbox's storage is unavailable"
        self.answer({"error": {"code": "storage_unavailable", "message": message}}, 503)


# --- upstream: WeChat's server API --------------------------------------------------


class _UpstreamHandler(_SandboxHandler):
    api = ""

    async def prepare(self) -> None:
        self.world.calls[self.api] = self.world.calls.get(self.api, 0) + 1
        fault = self.world.faults.get(self.api)
        if fault is None or fault.count <= 0:
            return
        fault.count -= 1
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status is not None:
            self.set_status(fault.status)
            self.finish("sandbox fault")
        elif fault.errcode is not None:
            self.errcode(fault.errcode, "sandbox fault")

    def errcode(self, code: int, message: str) -> None:
        self.answer({"errcode": code, "errmsg": message})

    def storage_unavailable(self) -> None:
        self.errcode(-1, "system error")  # what WeChat answers when it is in trouble

    def credentials(self, appid: str, secret: str) -> SandboxApp | None:
        """The app whose appid and secret these are, or None after answering WeChat's errcode."""
        app = self.world.app(appid)
        if app is None:
            self.errcode(40013, "invalid appid")
        elif not crypto.constant_time_equal(secret, app.secret):
            self.errcode(40125, "invalid appsecret")
            app = None
        return app

    async def token_app(self) -> SandboxApp | None:
        app = await self.world.token_app(self.get_query_argument("access_token", ""))
        if app is None:
            self.errcode(40001, "invalid credential, access_token is invalid or not latest")
        return app


class Code2SessionHandler(_UpstreamHandler):
    api = "jscode2session"

    async def get(self) -> None:
        app = self.credentials(self.get_query_argument("appid", ""), self.get_query_argument("secret", ""))
        if app is None:
            return
        if self.get_query_argument("grant_type", "") != "authorization_code":
            return self.errcode(40002, "invalid grant_type")
        result = await self.world.redeem(self.world.login_codes, app.appid, self.get_query_argument("js_code", ""))
        if isinstance(result, int):
            return self.errcode(result, "invalid code" if result == 40029 else "code been used")
        self.answer({"openid": result.openid, "session_key": result.session_key, "unionid": result.unionid})


class StableTokenHandler(_UpstreamHandler):
    api = "stable_token"

    async def post(self) -> None:
        body = self.json_body()
        app = self.credentials(str(body.get("appid", "")), str(body.get("secret", "")))
        if app is None:
            return
        if body.get("grant_type") != "client_credential":
            return self.errcode(40002, "invalid grant_type")
        token, expires_in = await self.world.issue_token(app.appid, bool(body.get("force_refresh")))
        self.answer({"access_token": token, "expires_in": expires_in})


class LegacyTokenHandler(_UpstreamHandler):
    """The old GET /cgi-bin/token: every call invalidates the previous token, which is
    how two servers refreshing on their own knock each other out (errcode 40001)."""

    api = "token"

    async def get(self) -> None:
        app = self.credentials(self.get_query_argument("appid", ""), self.get_query_argument("secret", ""))
        if app is None:
            return
        token, expires_in = await self.world.issue_token(app.appid, force_refresh=True)
        self.answer({"access_token": token, "expires_in": expires_in})


class PhoneNumberHandler(_UpstreamHandler):
    api = "getuserphonenumber"

    async def post(self) -> None:
        app = await self.token_app()
        if app is None:
            return
        body = self.json_body()
        result = await self.world.redeem_phone_code(app.appid, str(body.get("code", "")))
        if isinstance(result, int):
            return self.errcode(40029, "invalid code")
        sim, phone = result
        if "openid" in body and body["openid"] != sim.openid:
            return self.errcode(40029, "invalid code")
        info = self.world.phone_payload(sim, masked=False, phone=phone)
        self.answer({"errcode": 0, "errmsg": "ok", "phone_info": info})


class OpenDataHandler(_UpstreamHandler):
    """getopendata: the data of cloudIDs the device simulator issued, for their user and app
    only, until they expire. ``json`` is a JSON string, as WeChat documents it."""

    api = "getopendata"

    async def post(self) -> None:
        app = await self.token_app()
        if app is None:
            return
        listed = self.json_body().get("cloudid_list")
        if not isinstance(listed, list) or not listed or not all(isinstance(c, str) for c in listed):
            return self.errcode(40097, "invalid args")
        openid = self.get_query_argument("openid", None)
        entries = []
        for cloud_id in listed:
            data = self.world.open_data(app.appid, cloud_id, openid)
            if isinstance(data, int):
                return self.errcode(data, "invalid openid" if data == 40003 else "invalid args")
            text = json.dumps({"cloudID": cloud_id, "data": data}, ensure_ascii=False)
            entries.append({"cloud_id": cloud_id, "json": text})
        self.answer({"errcode": 0, "errmsg": "ok", "data_list": entries})


class CheckSessionHandler(_UpstreamHandler):
    api = "checksession"

    async def get(self) -> None:
        app = await self.token_app()
        if app is None:
            return
        if self.get_query_argument("sig_method", "") != "hmac_sha256":
            return self.errcode(87008, "invalid sig_method")
        openid = self.get_query_argument("openid", "")
        sim = await self.world.user_by_openid(app, openid)
        signature = self.get_query_argument("signature", "")
        if sim is None or not crypto.constant_time_equal(signature, crypto.checksession_signature(sim.session_key)):
            return self.errcode(87009, "invalid signature")
        self.answer({"errcode": 0, "errmsg": "ok"})


class StatsHandler(_SandboxHandler):
    """GET: how many times each upstream API was called (tests count token refreshes)."""

    def get(self) -> None:
        self.answer({"calls": self.world.calls})


class FaultsHandler(_SandboxHandler):
    """POST {"api", "errcode"?, "status"?, "delay"?, "count"?} arms a fault; DELETE clears all."""

    def post(self) -> None:
        body = self.json_body()
        api = body.pop("api", None)
        if api not in UPSTREAM_APIS:
            raise tornado.web.HTTPError(400, reason=f"api must be one of {', '.join(UPSTREAM_APIS)}")
        types: dict[str, type | tuple[type, ...]] = {"errcode": int, "status": int, "delay": (int, float), "count": int}
        for key, value in body.items():
            if key not in types or not isinstance(value, types[key]) or isinstance(value, bool):
                raise tornado.web.HTTPError(
                    400, reason=f"{key}: expected one of errcode, status, delay, count (numbers)"
                )
        self.world.faults[api] = Fault(**body)
        self.answer({"armed": api})

    def delete(self) -> None:
        self.world.faults.clear()
        self.answer({"cleared": True})


class InvalidateTokenHandler(_SandboxHandler):
    """POST {"app"}: the app's current access tokens stop working at once, so every call
    with one gets errcode 40001 until the gateway fetches a new one (as when another server
    forces a refresh). For drills of the shared token cache across processes and hosts."""

    async def post(self) -> None:
        name = self.json_body().get("app")
        app = self.world.app(name) if isinstance(name, str) else None
        if app is None:
            raise tornado.web.HTTPError(400, reason="app must be a sandbox app's name or appid")
        self.answer({"invalidated": await self.world.invalidate_tokens(app.appid)})


# --- the device simulator ---------------------------------------------------------------


class _DeviceHandler(_SandboxHandler):
    def sandbox_app(self, name: str) -> SandboxApp:
        app = self.world.app(name)
        if app is None:
            self.answer({"error": {"code": "unknown_app", "message": f"no sandbox app {name!r}"}}, 404)
            raise tornado.web.Finish()
        return app

    def user_name(self, body: dict[str, Any]) -> str:
        user = body.get("user")
        if not isinstance(user, str) or not user or len(user) > 128:
            self.answer({"error": {"code": "invalid_user", "message": "user must be a non-empty string"}}, 400)
            raise tornado.web.Finish()
        return user

    def wants_cloud_id(self, body: dict[str, Any], base_library: str) -> bool:
        """``cloud: true``: the event also carries a cloudID, as it does for mini programs
        with cloud development from base library 2.8.0 on."""
        cloud = body.get("cloud", False)
        if not isinstance(cloud, bool):
            self.answer({"error": {"code": "invalid_cloud", "message": "cloud must be true or false"}}, 400)
            raise tornado.web.Finish()
        return cloud and not version_below(base_library, CLOUD_ID_FROM)

    async def logged_in_user(self, app: SandboxApp, body: dict[str, Any]) -> SimUser:
        sim = await self.world.user(app, self.user_name(body))
        if sim is None:
            self.answer({"error": {"code": "not_logged_in", "message": "call wx.login for this user first"}}, 409)
            raise tornado.web.Finish()
        return sim


class WxLoginHandler(_DeviceHandler):
    async def post(self, app_name: str) -> None:
        app = self.sandbox_app(app_name)
        body = self.json_body()
        self.answer({"code": await self.world.wx_login(app, self.user_name(body))})


class GetPhoneNumberHandler(_DeviceHandler):
    async def post(self, app_name: str) -> None:
        app = self.sandbox_app(app_name)
        body = self.json_body()
        sim = await self.logged_in_user(app, body)
        phone = self.phone_override(body)
        base_library = str(body.get("base_library", "3.0.0"))
        cloud = self.wants_cloud_id(body, base_library)
        masked = version_below(base_library, MASKED_BELOW)
        payload = self.world.phone_payload(sim, masked, _watermark_override(body), phone)
        data, iv = crypto.encrypt_json(sim.session_key, payload)
        answer = {"encryptedData": data, "iv": iv}
        if not version_below(base_library, PHONE_CODE_FROM):
            answer["code"] = self.world.new_phone_code(sim, phone)  # WeChat adds it from 2.21.2 on
        if cloud:
            answer["cloudID"] = self.world.new_cloud_id(sim, payload)
        self.answer(answer)

    def phone_override(self, body: dict[str, Any]) -> str | None:
        """``phone``: another number than the user's own (E.164), to try other countries'."""
        phone = body.get("phone")
        if phone is None:
            return None
        if not isinstance(phone, str) or parse_e164(phone) is None:
            message = "phone must be a valid number in E.164, e.g. +12025550123"
            self.answer({"error": {"code": "invalid_phone", "message": message}}, 400)
            raise tornado.web.Finish()
        return phone


class GetUserProfileHandler(_DeviceHandler):
    async def post(self, app_name: str) -> None:
        app = self.sandbox_app(app_name)
        body = self.json_body()
        sim = await self.logged_in_user(app, body)
        info = self.world.user_info(sim)
        raw = json.dumps(info, ensure_ascii=False, separators=(",", ":"))
        full = {**info, "openId": sim.openid, "unionId": sim.unionid}
        full["watermark"] = self.world.watermark(app, _watermark_override(body))
        data, iv = crypto.encrypt_json(sim.session_key, full)
        answer = {
            "userInfo": info,
            "rawData": raw,
            "signature": crypto.rawdata_signature(raw, sim.session_key),
            "encryptedData": data,
            "iv": iv,
        }
        if self.wants_cloud_id(body, str(body.get("base_library", "3.0.0"))):
            answer["cloudID"] = self.world.new_cloud_id(sim, full)
        self.answer(answer)


def _watermark_override(body: dict[str, Any]) -> dict[str, Any] | None:
    # Tests ask for a foreign appid or an old timestamp to exercise the watermark step.
    mark = body.get("watermark")
    return mark if isinstance(mark, dict) else None


def sandbox_routes(world: SandboxWorld, upstream_prefix: str) -> list[tornado.routing.URLSpec]:
    """Routes of the fake WeChat API under ``upstream_prefix`` and the device under /_sandbox."""
    args = {"world": world}
    up = upstream_prefix.rstrip("/")
    return [
        tornado.web.url(up + "/sns/jscode2session", Code2SessionHandler, args),
        tornado.web.url(up + "/cgi-bin/stable_token", StableTokenHandler, args),
        tornado.web.url(up + "/cgi-bin/token", LegacyTokenHandler, args),
        tornado.web.url(up + "/wxa/business/getuserphonenumber", PhoneNumberHandler, args),
        tornado.web.url(up + "/wxa/checksession", CheckSessionHandler, args),
        tornado.web.url(up + "/wxa/getopendata", OpenDataHandler, args),
        tornado.web.url("/_sandbox/_faults", FaultsHandler, args),
        tornado.web.url("/_sandbox/_invalidate_token", InvalidateTokenHandler, args),
        tornado.web.url("/_sandbox/_stats", StatsHandler, args),
        tornado.web.url(r"/_sandbox/([^/]+)/wx\.login", WxLoginHandler, args),
        tornado.web.url(r"/_sandbox/([^/]+)/getPhoneNumber", GetPhoneNumberHandler, args),
        tornado.web.url(r"/_sandbox/([^/]+)/getUserProfile", GetUserProfileHandler, args),
    ]


def make_sandbox_app(world: SandboxWorld) -> tornado.web.Application:
    """The standalone sandbox (``wxgate sandbox``): WeChat's API at the root, as the real host."""
    return tornado.web.Application(sandbox_routes(world, ""))
