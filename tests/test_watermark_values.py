"""Watermark timestamps that are no time: NaN, infinities, negatives, integers past float
range. Each is 422 unexpected_payload, as a boolean or a string is: NaN used to pass
max_age (it compares false with everything), and with replay: reject to reach the
storage as the replay record's expiry (a 500 on MongoDB)."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from gateway.errors import GatewayError, UnexpectedPayload
from gateway.testing import GatewayTestCase, make_app_config, make_context
from tests.test_storage_contract import open_storage
from wxgate_plugins.steps.watermark import Watermark, WatermarkOptions

APPID = "wx0000000000test0"
NOT_A_TIME = [math.nan, math.inf, -math.inf, -1, -0.5, -1700000000, 10**400, -(10**400)]
OPTIONS = [
    pytest.param(WatermarkOptions(), id="no-max-age"),
    pytest.param(WatermarkOptions(max_age=600), id="max-age"),
    pytest.param(WatermarkOptions(max_age=600, replay="reject"), id="replay-reject"),
]


def stamp_id(stamp: Any) -> str:
    return f"{len(str(stamp))}-digit int" if isinstance(stamp, int) and abs(stamp) > 10**20 else repr(stamp)


async def watermark_error(options: WatermarkOptions, stamp: Any, storage: Any = None) -> GatewayError | None:
    ctx = make_context(
        # replay: reject keys on encryptedData: a request without it never reaches the storage
        {"encryptedData": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "AAAAAAAAAAAAAAAAAAAAAA=="},
        app=make_app_config(appid=APPID),
        storage=storage,
        data={"purePhoneNumber": "13800001111", "watermark": {"appid": APPID, "timestamp": stamp}},
    )
    try:
        await Watermark(options)(ctx)
    except GatewayError as error:
        return error
    return None


def run_watermark(options: WatermarkOptions, stamp: Any, storage: Any = None) -> GatewayError | None:
    return asyncio.run(watermark_error(options, stamp, storage))


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("stamp", NOT_A_TIME, ids=stamp_id)
def test_a_timestamp_that_is_no_time_is_unexpected_payload(options: WatermarkOptions, stamp: Any) -> None:
    error = run_watermark(options, stamp)
    assert type(error) is UnexpectedPayload
    assert (error.status, error.code) == (422, "unexpected_payload")
    assert "timestamp" in error.client_message


@pytest.mark.parametrize("stamp", [0, 0.0, 1700000000, 1700000000.5])
def test_finite_non_negative_timestamps_are_still_times(stamp: Any) -> None:
    assert run_watermark(WatermarkOptions(), stamp) is None  # old, but no max_age


def test_a_fresh_float_timestamp_passes_replay_reject_once() -> None:
    options = WatermarkOptions(max_age=600, replay="reject")
    memory = make_context().storage
    assert run_watermark(options, time.time() - 1.5, memory) is None
    assert getattr(run_watermark(options, time.time() - 1.5, memory), "code", None) == "replayed"


@pytest.mark.parametrize("stamp", [math.nan, math.inf, -1], ids=repr)
def test_replay_reject_on_mongo_refuses_instead_of_crashing(mongo_uri: str, stamp: float) -> None:
    # MongoDB's storage turns the replay record's expiry into a datetime: NaN raised there
    async def main() -> GatewayError | None:
        async with open_storage("mongo-pymongo", mongo_uri) as storage:
            return await watermark_error(WatermarkOptions(max_age=600, replay="reject"), stamp, storage)

    error = asyncio.run(main())
    assert type(error) is UnexpectedPayload


CONFIG = """
storage: {plugin: memory}
pipelines:
  login: [code2session, issue_session]
  phone:
    - check_session
    - decrypt: {kind: phone}
    - watermark: {max_age: 600, replay: reject}
    - respond
apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}
"""


class WatermarkValuesEndToEndTest(GatewayTestCase):
    """The sandbox encrypts what Python's json writes for these (NaN, Infinity, -Infinity:
    not standard JSON, but what WeChat's side could be made to produce through a broken
    encoder), and the gateway's decoder reads them back."""

    config_text = CONFIG

    def phone_with_timestamp(self, user: str, token: str, stamp: Any) -> tuple[int, dict[str, Any]]:
        device = self.get_phone_number(user, watermark={"timestamp": stamp})
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        return status, body

    def test_non_finite_and_negative_timestamps_are_422_through_the_gateway(self) -> None:
        token = self.login("nan")["token"]
        for stamp in [math.nan, math.inf, -math.inf, -5, 10**400]:
            status, body = self.phone_with_timestamp("nan", token, stamp)
            assert (status, body["error"]["code"]) == (422, "unexpected_payload"), stamp_id(stamp)
        status, body = self.phone_with_timestamp("nan", token, int(time.time()))
        assert status == 200, body
