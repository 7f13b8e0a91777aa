"""The sandbox's simulated WeChat: apps, users, one-time codes, session keys, tokens.

Users are deterministic (openid, unionid and phone derive from the user's name) so
tests can check results; session keys, tokens and cloudIDs are random, as WeChat's are.

Users (with their current session key and login count) and issued access tokens are kept
in the gateway's storage, so that they survive a restart as they would with WeChat: at
most ``max_users`` users, the oldest dropped first. ``users`` and ``tokens`` are this
process's cache of them, written through. A write the storage refuses (it is down) is
logged and the cache carries on, as WeChat would not notice the gateway's outage; a read
the storage refuses raises StorageUnavailable. One-time codes and cloudIDs live only in
memory.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from gateway.errors import StorageUnavailable
from gateway.logs import get_logger
from gateway.phones import parse_e164
from gateway.storage import SandboxUserRecord, Storage
from gateway.wechat import crypto

CODE_TTL = 300.0
CLOUD_ID_TTL = 300.0
TOKEN_TTL = 7200
TOKEN_RENEW_BEFORE = 300

log = get_logger("wxgate.sandbox")


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
    created_at: float = 0.0


@dataclass(slots=True)
class OneTimeCode:
    appid: str
    user: str
    expires_at: float
    used: bool = False
    # a phone code redeems to the number the device was given, not always the user's own
    phone: str | None = None


@dataclass(slots=True)
class CloudIDEntry:
    """What a cloudID stands for: the open data WeChat produced at the tap, for one user of
    one app. Unlike a code it is not spent: getopendata answers for it until it expires."""

    appid: str
    openid: str
    data: dict[str, Any]
    expires_at: float


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
    cloud_id_ttl: float = CLOUD_ID_TTL
    token_ttl: int = TOKEN_TTL
    # Benchmarks only: a code may be redeemed again, so a load tool can replay one request.
    reusable_codes: bool = False
    # Simulated users kept; past this the oldest goes first, so memory does not grow without limit.
    max_users: int = 10_000
    # Where users and tokens are kept (the gateway's storage); None: in this process only.
    storage: Storage | None = None
    # The cache of users, in the order they were cached (the oldest first), and of tokens.
    users: dict[tuple[str, str], SimUser] = field(default_factory=dict)
    login_codes: dict[str, OneTimeCode] = field(default_factory=dict)
    phone_codes: dict[str, OneTimeCode] = field(default_factory=dict)
    cloud_ids: dict[str, CloudIDEntry] = field(default_factory=dict)
    tokens: dict[str, dict[str, float]] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    # Every session key and access token ever issued (or read back from storage): leak tests grep for them.
    issued_secrets: list[str] = field(default_factory=list)

    def app(self, name_or_appid: str) -> SandboxApp | None:
        for app in self.apps:
            if name_or_appid in (app.name, app.appid):
                return app
        return None

    # --- the device side (what a phone running the mini program would get) ----------

    async def wx_login(self, app: SandboxApp, user: str) -> str:
        sim = await self.user(app, user)
        if sim is None:
            sim = SimUser(
                app=app,
                name=user,
                openid=openid_for(app.appid, user),
                unionid=_derive("u", "union:" + user),
                phone=phone_for(user),
                session_key=self._new_session_key(),
                created_at=time.time(),
            )
            self._cache(sim)
        else:
            # A repeated wx.login may replace the session_key; the sandbox always does.
            sim.session_key = self._new_session_key()
        sim.logins += 1
        await self._store(sim)
        code = secrets.token_hex(16)
        self.login_codes[code] = OneTimeCode(app.appid, user, time.time() + self.code_ttl)
        self._forget_expired()
        return code

    async def user(self, app: SandboxApp, user: str) -> SimUser | None:
        """The simulated user of that name, from the cache or else the storage."""
        sim = self.users.get((app.appid, user))
        if sim is None:
            sim = await self._load(app, openid_for(app.appid, user))
        return sim

    async def user_by_openid(self, app: SandboxApp, openid: str) -> SimUser | None:
        sim = next((u for u in self.users.values() if u.openid == openid and u.app == app), None)
        if sim is None:
            sim = await self._load(app, openid)
        return sim

    def phone_payload(
        self, sim: SimUser, masked: bool, watermark: dict[str, Any] | None = None, phone: str | None = None
    ) -> dict[str, Any]:
        """What WeChat encrypts (or getuserphonenumber answers) for the user's own number,
        or for ``phone`` (E.164, checked by the caller)."""
        fields = wechat_phone_fields(phone) if phone is not None else _mainland(sim.phone)
        if masked:
            fields = _masked(fields)
        return {**fields, "watermark": self.watermark(sim.app, watermark)}

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

    def new_phone_code(self, sim: SimUser, phone: str | None = None) -> str:
        code = secrets.token_hex(16)
        self.phone_codes[code] = OneTimeCode(sim.app.appid, sim.name, time.time() + self.code_ttl, phone=phone)
        return code

    def new_cloud_id(self, sim: SimUser, data: dict[str, Any]) -> str:
        """A cloudID for ``data`` (what getopendata will answer), bound to the user and app."""
        cloud_id = f"{secrets.randbelow(90) + 10}_{secrets.token_urlsafe(36)}"
        self.cloud_ids[cloud_id] = CloudIDEntry(sim.app.appid, sim.openid, data, time.time() + self.cloud_id_ttl)
        return cloud_id

    # --- the server side (what WeChat's API answers) --------------------------------

    def open_data(self, appid: str, cloud_id: str, openid: str | None) -> dict[str, Any] | int:
        """The data a cloudID stands for, or WeChat's errcode: 40003 when ``openid`` is not
        its user's; 40097 (invalid args) when it is unknown, expired or another app's."""
        entry = self.cloud_ids.get(cloud_id)
        if entry is None or entry.appid != appid or entry.expires_at < time.time():
            return 40097
        if openid is not None and openid != entry.openid:
            return 40003
        return entry.data

    async def invalidate_tokens(self, appid: str) -> int:
        """Every access token of the app stops working at once (WeChat answers 40001 for it)
        until a new one is fetched, as when another server forces a refresh. Returns how
        many valid tokens there were."""
        now = time.time()
        known = await self._tokens(appid)
        count = sum(1 for expires in known.values() if expires > now)
        self.tokens[appid] = {}
        if self.storage is not None:
            try:
                await self.storage.put_sandbox_tokens(appid, {})
            except StorageUnavailable:
                log.warning("sandbox_tokens_not_stored", appid=appid)
        return count

    async def redeem(self, codes: dict[str, OneTimeCode], appid: str, code: str) -> SimUser | int:
        """The user a one-time code stands for, or WeChat's errcode."""
        entry = codes.get(code)
        if entry is None or entry.appid != appid or entry.expires_at < time.time():
            return 40029
        if entry.used:
            return 40163
        app = self.app(appid)
        sim = await self.user(app, entry.user) if app is not None else None
        if sim is None:  # dropped since (max_users), or its app left the configuration
            return 40029
        entry.used = not self.reusable_codes
        return sim

    async def redeem_phone_code(self, appid: str, code: str) -> tuple[SimUser, str | None] | int:
        """The user a phone code stands for and the number it was issued with (None: the
        user's own), or WeChat's errcode."""
        entry = self.phone_codes.get(code)
        result = await self.redeem(self.phone_codes, appid, code)
        if isinstance(result, int):
            return result
        assert entry is not None  # redeem found it
        return result, entry.phone

    async def issue_token(self, appid: str, force_refresh: bool) -> tuple[str, int]:
        now = time.time()
        known = await self._tokens(appid)
        valid = {t: exp for t, exp in known.items() if exp > now}
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
        if valid != known and self.storage is not None:
            try:
                await self.storage.put_sandbox_tokens(appid, valid)
            except StorageUnavailable:
                log.warning("sandbox_tokens_not_stored", appid=appid)
        return token, int(expires - now)

    async def token_app(self, token: str) -> SandboxApp | None:
        now = time.time()
        for app in self.apps:
            if (await self._tokens(app.appid)).get(token, 0) > now:
                return app
        return None

    async def _tokens(self, appid: str) -> dict[str, float]:
        """The app's issued tokens: read from storage once per process, then cached."""
        cached = self.tokens.get(appid)
        if cached is None:
            cached = await self.storage.get_sandbox_tokens(appid) if self.storage is not None else {}
            self.issued_secrets.extend(cached)
            self.tokens[appid] = cached
        return cached

    def _new_session_key(self) -> str:
        key = crypto.new_session_key()
        self.issued_secrets.append(key)
        return key

    def _cache(self, sim: SimUser) -> None:
        self.users[(sim.app.appid, sim.name)] = sim
        while len(self.users) > self.max_users:
            del self.users[next(iter(self.users))]  # dicts keep insertion order: the oldest

    async def _load(self, app: SandboxApp, openid: str) -> SimUser | None:
        if self.storage is None:
            return None
        record = await self.storage.get_sandbox_user(app.appid, openid)
        if record is None:
            return None
        sim = SimUser(
            app=app,
            name=record.name,
            openid=record.openid,
            unionid=record.unionid,
            phone=record.phone,
            session_key=record.session_key,
            logins=record.logins,
            created_at=record.created_at,
        )
        self.issued_secrets.append(sim.session_key)
        self._cache(sim)
        return sim

    async def _store(self, sim: SimUser) -> None:
        if self.storage is None:
            return
        record = SandboxUserRecord(
            appid=sim.app.appid,
            openid=sim.openid,
            name=sim.name,
            unionid=sim.unionid,
            phone=sim.phone,
            session_key=sim.session_key,
            logins=sim.logins,
            created_at=sim.created_at,
        )
        try:
            await self.storage.put_sandbox_user(record, self.max_users)
        except StorageUnavailable:
            # WeChat does not notice the gateway's outage: this process's cache carries on
            log.warning("sandbox_user_not_stored", appid=sim.app.appid, openid=sim.openid)

    def _forget_expired(self) -> None:
        now = time.time()
        for codes in (self.login_codes, self.phone_codes):
            for code in [c for c, e in codes.items() if e.expires_at < now - 3600]:
                del codes[code]
        for cloud_id in [c for c, e in self.cloud_ids.items() if e.expires_at < now - 3600]:
            del self.cloud_ids[cloud_id]


def _derive(prefix: str, seed: str) -> str:
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return prefix + base64.urlsafe_b64encode(digest).decode()[:27]


def openid_for(appid: str, user: str) -> str:
    """The simulated user's openid: from the appid and the name, as stable as WeChat's."""
    return _derive("o", appid + ":" + user)


def phone_for(user: str) -> str:
    """The simulated user's mobile number: 11 digits, a plausible Chinese prefix."""
    n = int.from_bytes(hashlib.sha256(("phone:" + user).encode("utf-8")).digest()[:8], "big")
    return "13" + str(n % 10**9).zfill(9)


def wechat_phone_fields(e164: str) -> dict[str, str]:
    """A number (E.164, valid) as WeChat's phone payload gives it: a mainland number
    without its country code, any other with it in ``phoneNumber`` only."""
    number = parse_e164(e164)
    if number is None:
        raise ValueError(f"not a valid E.164 number: {e164!r}")
    national = phonenumbers.national_significant_number(number)
    if number.country_code == 86:
        return _mainland(national)
    return {"phoneNumber": e164, "purePhoneNumber": national, "countryCode": str(number.country_code)}


def _mainland(national: str) -> dict[str, str]:
    return {"phoneNumber": national, "purePhoneNumber": national, "countryCode": "86"}


def _masked(fields: dict[str, str]) -> dict[str, str]:
    """As base libraries below 1.9.1 give it: the middle of the national number masked."""
    pure, country = fields["purePhoneNumber"], fields["countryCode"]
    hidden = pure[:-8] + "****" + pure[-4:] if len(pure) >= 8 else "****" + pure[-3:]
    if country == "86":
        return _mainland(hidden)
    return {"phoneNumber": f"+{country}{hidden}", "purePhoneNumber": hidden, "countryCode": country}


def version_below(version: str, floor: tuple[int, ...]) -> bool:
    try:
        parts = tuple(int(p) for p in version.split("."))
    except ValueError:
        return False
    return parts < floor
