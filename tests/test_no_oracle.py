"""No padding oracle: every way decryption can fail answers the same status, code and
message, in the same time within noise (medians over many requests, real HTTP)."""

from __future__ import annotations

import base64
import json
import statistics
import time
from typing import Any

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

from gateway.testing import GatewayTestCase
from gateway.wechat import crypto

APPID = "wx0000000000demo0"
ROUNDS = 60


class NoOracleTest(GatewayTestCase):
    def test_all_failures_look_and_take_the_same(self) -> None:
        token = self.login("ora")["token"]
        world: Any = self.gateway.sandbox
        key = base64.b64decode(world.users[(APPID, "ora")].session_key)
        iv = bytes(range(16))

        def sealed(plain: bytes, padded: bool = True) -> str:
            data = pad(plain, 16) if padded else plain
            return base64.b64encode(AES.new(key, AES.MODE_CBC, iv).encrypt(data)).decode()

        cases = {
            "bad padding": sealed(b"x" * 32, padded=False),
            "not UTF-8": sealed(b"\xff\xfe" * 20),
            "not JSON": sealed(b"this is plain text, not JSON at all"),
            "JSON, not an object": sealed(b"[1, 2, 3]"),
            "another key": crypto.encrypt_json(crypto.new_session_key(), {"phoneNumber": "1"}, iv=iv)[0],
        }
        fields = {name: {"encryptedData": data, "iv": base64.b64encode(iv).decode()} for name, data in cases.items()}
        answers = set()
        timings: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(ROUNDS):  # interleaved, so drift affects every kind alike
            for name, body in fields.items():
                started = time.perf_counter()
                status, answer, _ = self.call("/v1/demo/phone", body, token=token)
                timings[name].append(time.perf_counter() - started)
                answers.add((status, json.dumps(answer, sort_keys=True)))
        assert len(answers) == 1
        status, text = next(iter(answers))
        assert status == 400
        assert json.loads(text)["error"]["code"] == "decrypt_failed"
        medians = {name: statistics.median(values) for name, values in timings.items()}
        fastest, slowest = min(medians.values()), max(medians.values())
        assert slowest < fastest * 1.25, medians  # within noise: no kind is measurably slower
