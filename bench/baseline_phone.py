#!/usr/bin/env python3
"""The baseline a user would write instead of wxgate's ``/phone``: the smallest handler for
the same call, to measure wxgate against on the same MongoDB server.

    python bench/baseline_phone.py PORT MONGO_URI DATABASE APPID

Tornado and PyMongo's async client: read the session by the token's hash (one find in
``baseline_sessions``: ``{_id: sha256(token), openid, session_key}``, the key kept plain,
as such a handler would), decrypt ``encryptedData`` with the session key (AES-128-CBC,
PKCS#7, the watermark's appid checked: what wechatpy's ``WeChatWxaCrypto.decrypt_message``
does; wechatpy is not installed here, so this is its minimal equivalent on pycryptodome),
upsert the phone (one update of ``baseline_phones``), answer the number. Nothing else: no
freshness check, no masking, no previous key, no sealing, no MAC, no events.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from typing import Any

import tornado.ioloop
import tornado.web
from Crypto.Cipher import AES
from Crypto.Util.Padding import unpad
from pymongo import AsyncMongoClient


def decrypt(session_key: str, encrypted: str, iv: str, appid: str) -> dict[str, Any]:
    cipher = AES.new(base64.b64decode(session_key), AES.MODE_CBC, base64.b64decode(iv))
    data: dict[str, Any] = json.loads(unpad(cipher.decrypt(base64.b64decode(encrypted)), 16))
    if data.get("watermark", {}).get("appid") != appid:
        raise ValueError("watermark appid mismatch")
    return data


class PhoneHandler(tornado.web.RequestHandler):
    def initialize(self, db: Any, appid: str) -> None:
        self.db = db
        self.appid = appid

    async def post(self) -> None:
        token = self.request.headers.get("Authorization", "").removeprefix("Bearer ")
        session = await self.db.baseline_sessions.find_one({"_id": hashlib.sha256(token.encode()).hexdigest()})
        if session is None:
            raise tornado.web.HTTPError(401)
        body = json.loads(self.request.body)
        try:
            data = decrypt(session["session_key"], body["encryptedData"], body["iv"], self.appid)
        except (ValueError, KeyError):
            raise tornado.web.HTTPError(400) from None
        await self.db.baseline_phones.update_one(
            {"openid": session["openid"]},
            {"$set": {"phone": data["purePhoneNumber"], "country_code": data["countryCode"]}},
            upsert=True,
        )
        self.write({"phoneNumber": data["phoneNumber"], "countryCode": data["countryCode"]})


def main() -> None:
    port, uri, database, appid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    db: Any = AsyncMongoClient(uri)[database]
    app = tornado.web.Application([(r"/v1/bench/phone", PhoneHandler, {"db": db, "appid": appid})])
    app.listen(port, "127.0.0.1")
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
