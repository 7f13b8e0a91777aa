"""``/admin/api/config``: the running configuration's digest and the reloads so far, and
checking a YAML draft the way ``wxgate validate`` checks a file, without applying it.

A draft is checked with an empty environment: a ``${VAR}`` without a default is reported
as unset, never filled in from the server's environment, so a draft cannot read the
server's secrets back. No message repeats a value from the draft either: the
``(got ...)`` that validation adds for a wrong value is left out.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.admin.base import AdminAPIHandler
from gateway.admin.window import Window
from gateway.config import parse_config
from gateway.errors import ConfigError, MissingField
from gateway.pipeline import Pipeline
from gateway.registry import PluginError

DRAFT_NAME = "draft.yaml"
_WHERE = re.compile(r"^(?P<file>.*?):(?P<line>\d+)(?::(?P<column>\d+))?: (?P<rest>.*)$")
_GOT = re.compile(r" \(got .*\)$")


def check_text(text: str, file: str, env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The errors ``wxgate validate`` would print for ``text`` (one per line of its
    message), with their line numbers; [] when it is valid."""
    try:
        config = parse_config(text, file, env=env)
        for flows in config.flows.values():  # steps are built too, as validate builds them
            for flow, steps in flows.items():
                Pipeline.build(flow, steps)
        refusal = config.sandbox_bind_refusal()
        if refusal is not None:
            raise ConfigError(refusal)
    except (ConfigError, PluginError) as exc:
        return [_error(line) for line in str(exc).splitlines() if line.strip()]
    return []


def _error(line: str) -> dict[str, Any]:
    line = _GOT.sub("", line)
    match = _WHERE.match(line)
    if match is None:
        return {"line": None, "column": None, "message": line}
    column = match.group("column")
    return {
        "line": int(match.group("line")),
        "column": int(column) if column else None,
        "message": f"{match.group('file')}:{match.group('line')}: {match.group('rest')}",
    }


class ConfigHandler(AdminAPIHandler):
    def get(self) -> None:
        config = self.gateway.config
        # totals since the start, every worker's added up (each reloads on its own)
        totals = Window(0.0, self.admin.window.source(), {}).deltas("wxgate_config_reloads_total", ("result",))
        counts = {result: int(totals.get((result,), 0.0)) for result in ("ok", "refused")}
        last = self.admin.observer.last_reload
        try:
            text: str | None = Path(config.path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = None
        on_disk = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16] if text is not None else None
        # the file differs from what runs (edited, or a reload was refused): what a reload would
        # say of it now, with the server's environment as a reload has it
        file_errors = check_text(text, config.path, os.environ) if text is not None and on_disk != config.digest else []
        self.write_json(
            {
                "digest": config.digest,
                "path": config.path,
                # the file now: a differing digest after a refused reload means the file is not what runs
                "file_digest": on_disk,
                "file_errors": file_errors,
                "reloads": counts,
                "last_reload": None
                if last is None
                else {"result": "ok", "digest": last.digest, "previous_digest": last.previous_digest, "at": last.at},
            }
        )


class DraftHandler(AdminAPIHandler):
    """POST a YAML draft (the request body, any content type): its errors, never applied."""

    def post(self) -> None:
        text = self.request.body.decode("utf-8", "replace")
        if not text.strip():
            raise MissingField("Send the YAML draft as the request body.")
        errors = check_text(text, DRAFT_NAME, env={})
        self.write_json({"valid": not errors, "errors": errors})
