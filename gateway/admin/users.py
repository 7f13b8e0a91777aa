"""``/admin/api/users``: one user of an app (by openid, or by phone where the app's flows
keep numbers or their keyed hashes), their masked phone bindings and live sessions, and
revoking every session at once (what ``wxgate sessions revoke --openid`` does)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.admin.base import AdminAPIHandler
from gateway.admin.phone_owners import phone_owners
from gateway.config import AppConfig, Config
from gateway.errors import InvalidField, UnknownApp
from gateway.sealing import keyed_hash
from gateway.storage import PhoneBinding, Storage

# Hex digits of a token's hash shown, as `wxgate sessions list` shows them.
SHOWN_HASH = 12
_SEPARATORS = re.compile(r"[\s().-]")
_E164_DIGITS = re.compile(r"\+[1-9][0-9]{5,16}")
_OPENID = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True, slots=True)
class PhoneLookup:
    """How numbers can be found for an app: the keys persist_phone would have stored."""

    plain: bool
    hash_keys: tuple[str, ...]
    reason: str | None  # why lookup is unavailable, when it is

    @property
    def available(self) -> bool:
        return self.reason is None

    def keys_for(self, number: str) -> list[str]:
        """The binding keys ``+<country code><national number>`` is stored under."""
        keys = [number] if self.plain else []
        return keys + [keyed_hash(key.encode(), number) for key in self.hash_keys]

    def as_json(self) -> dict[str, Any]:
        return {"available": self.available, "reason": self.reason}


def phone_lookup(config: Config, app: str) -> PhoneLookup:
    modes: set[str] = set()
    hash_keys: list[str] = []
    for steps in config.flows[app].values():
        for step in steps:
            if step.name != "persist_phone":
                continue
            mode = str(getattr(step.options, "store_phone", ""))
            modes.add(mode)
            key = getattr(step.options, "hash_key", None)
            if mode == "hashed" and key is not None and key.get_secret_value() not in hash_keys:
                hash_keys.append(key.get_secret_value())
    if not modes:
        reason: str | None = "no flow of this app stores phone numbers (no persist_phone step)"
    elif modes == {"masked"}:
        reason = "this app stores only masked numbers (store_phone: masked): look users up by openid"
    else:
        reason = None
    return PhoneLookup(plain="plain" in modes, hash_keys=tuple(hash_keys), reason=reason)


def _app(config: Config, name: str | None) -> AppConfig:
    app = config.apps.get(name or "")
    if app is None:
        raise UnknownApp(f"There is no app {name!r}; its apps: {', '.join(sorted(config.apps))}.")
    return app


def _openid(value: Any) -> str:
    if not isinstance(value, str) or not _OPENID.fullmatch(value):
        raise InvalidField("'openid' must be an openid (letters, digits, '_' and '-').")
    return value


def _binding(phone: PhoneBinding) -> dict[str, Any]:
    kept = "plain" if phone.number is not None else ("masked" if phone.key.startswith("+") else "hashed")
    return {
        "masked": phone.masked,
        "country_code": phone.country_code,
        "stored_as": kept,
        "first_seen": phone.first_seen,
        "last_seen": phone.last_seen,
    }


async def _describe(storage: Storage, appid: str, openid: str) -> dict[str, Any]:
    user = await storage.get_user(appid, openid)
    phones = await storage.get_phones(appid, openid)
    sessions = await storage.list_login_sessions(appid, openid)
    return {
        "openid": openid,
        "user": None
        if user is None
        else {"first_seen": user.first_seen, "last_seen": user.last_seen, "logins": user.logins},
        "phones": [_binding(p) for p in phones],
        "sessions": [
            {"id": s.token_hash[:SHOWN_HASH], "created_at": s.created_at, "expires_at": s.expires_at} for s in sessions
        ],
    }


class UsersHandler(AdminAPIHandler):
    """GET ?app=NAME&openid=ID, or ?app=NAME&phone=+8613812345678."""

    async def get(self) -> None:
        config = self.gateway.config
        name = self.argument("app")
        app = _app(config, name)
        assert name is not None
        lookup = phone_lookup(config, name)
        openid = self.argument("openid", required=False)
        phone = self.argument("phone", required=False)
        if (openid is None) == (phone is None):
            raise InvalidField("Give either 'openid' or 'phone'.")
        storage = self.gateway.storage
        if openid is not None:
            openids = [_openid(openid)]
        elif not lookup.available:
            self.write_json({"app": name, "phone_lookup": lookup.as_json(), "users": []})
            return
        else:
            number = _SEPARATORS.sub("", phone or "")
            if not _E164_DIGITS.fullmatch(number):
                raise InvalidField("'phone' must be a number with its country code, such as +8613812345678.")
            found: set[str] = set()
            for key in lookup.keys_for(number):
                owners = await phone_owners(storage, app.appid, key)
                if owners is None:
                    lookup = PhoneLookup(False, (), f"the {storage.name!r} storage cannot look phones up")
                    break
                found.update(owners)
            openids = sorted(found)
        users = [await _describe(storage, app.appid, o) for o in openids]
        # an openid nobody knows: nothing stored at all
        users = [u for u in users if u["user"] or u["phones"] or u["sessions"]]
        self.write_json({"app": name, "phone_lookup": lookup.as_json(), "users": users})


class RevokeHandler(AdminAPIHandler):
    """POST {"app": NAME, "openid": ID}: every login token of the user stops working at once."""

    async def post(self) -> None:
        body = self.json_body()
        name = body.get("app")
        app = _app(self.gateway.config, name if isinstance(name, str) else None)
        openid = _openid(body.get("openid"))
        count = await self.gateway.storage.delete_login_sessions(app.appid, openid)
        self.audit("admin_sessions_revoked", app=name, openid=openid, revoked=count)
        self.write_json({"revoked": count})
