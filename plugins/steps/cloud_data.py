"""cloud_data: open data by ``cloudID`` (base library 2.8.0+, mini programs with cloud development).

Instead of ``encryptedData`` + ``iv``, the event carries a ``cloudID``, which the gateway
exchanges at WeChat's getopendata with the app's access token (shared by every process,
refreshed once when WeChat rejects it). The answer's ``data`` is the object decryption
would give, watermark included; it becomes ``ctx.data`` exactly where ``decrypt`` puts
its plaintext, so ``watermark``, ``mask_guard``, ``persist_phone``, ``webhook`` and
``respond`` work unchanged.

A cloudID is not bound to a session_key, so nothing but the checks here ties the data to
the caller: WeChat is asked to check the session's openid, and the step refuses data that
names another user (its ``openId``/``openid``) or another app (its watermark's appid).
Exchanging a cloudID spends nothing: WeChat answers for it again until it expires.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field

from gateway import Context, Step, StepOptions
from gateway.errors import InvalidField, MissingField, UnexpectedPayload, WatermarkMismatch
from gateway.step import Fact
from wxgate_plugins.steps.decrypt import OpenDataKind, check_kind, facts_of_kind

# WeChat's cloudIDs are like "27_Ih-9vxDaOhIbh48Bdpk90DUkUoNMAPaNtg7OSGM-P2wPEk1NbspjKGoql_g".
_CLOUD_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
_OPENID_KEYS = ("openId", "openid")


class CloudDataOptions(StepOptions):
    kind: OpenDataKind = Field(
        "any", description="What the data must be; its required keys are checked (as decrypt's kind)."
    )
    bind_openid: bool = Field(True, description="Send the session's openid so WeChat checks the cloudID is theirs.")


class CloudData(Step[CloudDataOptions]):
    name: ClassVar[str] = "cloud_data"
    needs = ("session",)
    gives = ("data",)  # with kind: any; the kind of data with another kind, as decrypt

    @classmethod
    def gives_for(cls, options: CloudDataOptions) -> tuple[Fact, ...]:
        return facts_of_kind(options.kind)

    async def __call__(self, ctx: Context) -> None:
        cloud_id = ctx.fields.get("cloudID")
        if not cloud_id:
            raise MissingField("cloudID is required: the cloudID from the event (base library 2.8.0+).")
        if not _CLOUD_ID.fullmatch(cloud_id):
            raise InvalidField("cloudID is not a WeChat cloudID.", hint="Send e.detail.cloudID unchanged.")
        session = ctx.require_session()
        openid = session.openid if self.options.bind_openid else None
        data = await ctx.wechat.get_open_data(cloud_id, openid)
        _check_owner(data, session.openid, ctx.app.appid)
        check_kind(self.options.kind, data, ctx)
        ctx.data = data


def _check_owner(data: dict[str, Any], openid: str, appid: str) -> None:
    """Refuses data that names another user or another app, as decrypt's checks do."""
    for key in _OPENID_KEYS:
        if key in data and data[key] != openid:
            raise UnexpectedPayload("The open data belongs to another user.", log_detail=f"cloud data {key} differs")
    mark = data.get("watermark")
    if not isinstance(mark, dict):
        raise UnexpectedPayload("The open data has no watermark.")
    if mark.get("appid") != appid:
        raise WatermarkMismatch(log_detail=f"cloud data watermark appid {mark.get('appid')!r}")
