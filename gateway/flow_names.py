"""The flows an app can define, and the pipelines it has when its file defines none.

Kept apart from the configuration loader so that adding a flow touches this list, the
routing rule in :mod:`gateway.flows` and the default file, and nothing else.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

FlowName = Literal[
    "login",
    "phone",
    "phone_oneshot",
    "phone_code",
    "phone_cloud",
    "userinfo",
    "userinfo_cloud",
    "session",
    "logout",
]
FLOWS: tuple[str, ...] = get_args(FlowName)

# A step as written in YAML: its name, or {name: options}.
RawStep = str | dict[str, dict[str, Any] | None]

# Flows every app has even when its file defines neither (files written before they
# existed keep working); a file that defines one replaces its default. The cloudID flows
# (phone_cloud, userinfo_cloud) are deliberately not here: they hand out a phone number
# or a profile, and a built-in pipeline would skip whatever policy steps the operator put
# in the file's phone and userinfo flows (a blocklist, a hashed store_phone). A file
# without them answers cloudID requests with 404 flow_not_configured.
DEFAULT_PIPELINES: dict[str, list[RawStep]] = {
    "session": ["check_session", "session_info"],
    "logout": ["check_session", "revoke_session"],
}
