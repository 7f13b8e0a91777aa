"""The sandbox's simulated WeChat: apps, users, one-time codes, session keys, tokens.

Users are deterministic (openid, unionid and phone derive from the user's name) so
tests can check results; session keys and tokens are random, as WeChat's are.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.wechat import crypto

CODE_TTL = 300.0
TOKEN_TTL = 7200
TOKEN_RENEW_BEFORE = 300


@dataclass(frozen=True, slots=True)
class SandboxApp:
    name: str
    appid: str
    secret: str


@dataclass(slots=True)
class SimUser:
    app: SandboxApp
    name: str
    openid: str
    unionid: str
    phone: str
    session_key: str
    logins: int = 0


@dataclass(slots=True)
class OneTimeCode:
    appid: str
    user: str
    expires_at: float
    used: bool = False


@dataclass(slots=True)
class Fault:
    """Make an upstream API misbehave for the next ``count`` calls (tests, demos)."""

    errcode: int | None = None
    status: int | None = None
    delay: float = 0.0
    count: int = 1


@dataclass
class SandboxWorld:
    apps: list[SandboxApp]
    code_ttl: float = CODE_TTL
    token_ttl: int = TOKEN_TTL
    # Benchmarks only: a code may be redeemed again, so a load tool can replay one request.
    reusable_codes: bool = False
    users: dict[tuple[str, str], SimUser] = field(default_factory=dict)
    login_codes: dict[str, OneTimeCode] = field(default_factory=dict)
    phone_codes: dict[str, OneTimeCode] = field(default_factory=dict)
    tokens: dict[str, dict[str, float]] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    # Every session key and access token ever issued: leak tests grep for them.
    issued_secrets: list[str] = field(default_factory=list)

    def app(self, name_or_appid: str) -> SandboxApp | None:
        for app in self.apps:
            if name_or_appid in (app.name, app.appid):
                return app
        return None

    # --- the device side (what a phone running the mini program would get) ----------

    def wx_login(self, app: SandboxApp, user: str) -> str:
        key = (app.appid, user)
        sim = self.users.get(key)
        if sim is None:
            sim = SimUser(
                app=app,
                name=user,
                openid=_derive("o", app.appid + ":" + user),
                unionid=_derive("u", "union:" + user),
                phone=phone_for(user),
                session_key=self._new_session_key(),
            )
            self.users[key] = sim
        else:
            # A repeated wx.login may replace the session_key; the sandbox always does.
            sim.session_key = self._new_session_key()
        sim.logins += 1
        code = secrets.token_hex(16)
        self.login_codes[code] = OneTimeCode(app.appid, user, time.time() + self.code_ttl)
        self._forget_expired()
        return code

    def user(self, app: SandboxApp, user: str) -> SimUser | None:
        return self.users.get((app.appid, user))

    def phone_payload(self, sim: SimUser, masked: bool, watermark: dict[str, Any] | None = None) -> dict[str, Any]:
        number = sim.phone[:3] + "****" + sim.phone[-4:] if masked else sim.phone
        mark = self.watermark(sim.app, watermark)
        return {"phoneNumber": number, "purePhoneNumber": number, "countryCode": "86", "watermark": mark}

    def watermark(self, app: SandboxApp, override: dict[str, Any] | None = None) -> dict[str, Any]:
        mark: dict[str, Any] = {"appid": app.appid, "timestamp": int(time.time())}
        mark.update(override or {})
        return mark

    def user_info(self, sim: SimUser) -> dict[str, Any]:
        return {
            "nickName": f"User {sim.name}",
            "gender": 0,
            "language": "zh_CN",
            "city": "Shenzhen",
            "province": "Guangdong",
            "country": "China",
            "avatarUrl": f"https://sandbox.invalid/avatar/{sim.openid}.png",
        }

    def new_phone_code(self, sim: SimUser) -> str:
        code = secrets.token_hex(16)
        self.phone_codes[code] = OneTimeCode(sim.app.appid, sim.name, time.time() + self.code_ttl)
        return code

    # --- the server side (what WeChat's API answers) --------------------------------

    def redeem(self, codes: dict[str, OneTimeCode], appid: str, code: str) -> SimUser | int:
        """The user a one-time code stands for, or WeChat's errcode."""
        entry = codes.get(code)
        if entry is None or entry.appid != appid or entry.expires_at < time.time():
            return 40029
        if entry.used:
            return 40163
        entry.used = not self.reusable_codes
        return self.users[(appid, entry.user)]

    def issue_token(self, appid: str, force_refresh: bool) -> tuple[str, int]:
        now = time.time()
        valid = {t: exp for t, exp in self.tokens.get(appid, {}).items() if exp > now}
        if force_refresh:
            valid = {}
        newest = max(valid.items(), key=lambda item: item[1], default=None)
        if newest is not None and newest[1] - now > TOKEN_RENEW_BEFORE:
            token, expires = newest
        else:
            # Normal mode: the new token overlaps with the old one until the old expires.
            token = secrets.token_urlsafe(24)
            expires = now + self.token_ttl
            valid[token] = expires
            self.issued_secrets.append(token)
        self.tokens[appid] = valid
        return token, int(expires - now)

    def token_app(self, token: str) -> SandboxApp | None:
        now = time.time()
        for appid, valid in self.tokens.items():
            if valid.get(token, 0) > now:
                return self.app(appid)
        return None

    def _new_session_key(self) -> str:
        key = crypto.new_session_key()
        self.issued_secrets.append(key)
        return key

    def _forget_expired(self) -> None:
        now = time.time()
        for codes in (self.login_codes, self.phone_codes):
            for code in [c for c, e in codes.items() if e.expires_at < now - 3600]:
                del codes[code]


def _derive(prefix: str, seed: str) -> str:
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return prefix + base64.urlsafe_b64encode(digest).decode()[:27]


def phone_for(user: str) -> str:
    """The simulated user's mobile number: 11 digits, a plausible Chinese prefix."""
    n = int.from_bytes(hashlib.sha256(("phone:" + user).encode("utf-8")).digest()[:8], "big")
    return "13" + str(n % 10**9).zfill(9)


def version_below(version: str, floor: tuple[int, ...]) -> bool:
    try:
        parts = tuple(int(p) for p in version.split("."))
    except ValueError:
        return False
    return parts < floor
