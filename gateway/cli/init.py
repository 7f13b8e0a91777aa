"""``wxgate init [DIR]``: write a commented starter ``wxgate.yaml`` that serves as written."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.base import RUNTIME_FAILURE, USAGE_ERROR, CLIError, Subcommands, add_command

FILE_NAME = "wxgate.yaml"  # the name `wxgate` looks for in its working directory

STARTER = """\
# wxgate's configuration: `wxgate serve` in this directory finds it (or give --config FILE,
# or set WXGATE_CONFIG). Check a change with `wxgate validate`, apply it to a running gateway
# with `wxgate reload` (or SIGHUP). Every key is described in wxgate's README, operations in
# docs/operations.md.
#
# As written, it serves one app, `demo`, whose WeChat is the built-in sandbox: try it with
#   curl -s -X POST http://127.0.0.1:8080/_sandbox/demo/wx.login -d '{"user":"alice"}'
#   curl -s -X POST http://127.0.0.1:8080/v1/demo/login -d '{"code":"<the code above>"}'
#
# ${VAR} reads the environment (${VAR:-default} when it may be unset); `wxgate --env-file FILE`
# reads variables from a dotenv file. Keep secrets there, never in this file.

server:
  host: ${WXGATE_HOST:-127.0.0.1}   # a sandbox app is served on loopback addresses only
  port: ${WXGATE_PORT:-8080}
  log_format: ${WXGATE_LOG_FORMAT:-console}   # json in production: one JSON object per line
  # pid_file: /run/wxgate/wxgate.pid   # for `wxgate reload`

# `embedded` runs a local MongoDB wire-protocol server with its data in var/mongo (beside
# this file when you start wxgate here), so users and sessions survive restarts. For several
# processes or hosts, point every gateway at one MongoDB and give them the same key:
#   uri: ${WXGATE_MONGO_URI}      encryption_key: ${WXGATE_STORAGE_KEY}   (base64 of 32 bytes)
storage:
  plugin: mongo
  options:
    uri: ${WXGATE_MONGO_URI:-embedded}
    data_dir: var/mongo
    encryption_key: ${WXGATE_STORAGE_KEY:-auto}

# Signed webhooks for your other services; an endpoint with an empty url is off.
webhooks:
  endpoints:
    - name: backend
      url: ${WXGATE_WEBHOOK_URL:-}
      secret: ${WXGATE_WEBHOOK_SECRET:-}   # 16+ characters when url is set

# Flows, each an ordered list of steps: a bare name, or `name: {options}`. These are the
# flows the README's walk-through calls; `session` and `logout` have built-in pipelines
# when left out. A flow left out here answers 404 flow_not_configured.
pipelines:
  login:                      # {code} from wx.login
    - rate_limit: {per: ip, limit: 60, window: 60}
    - code2session
    - persist_user
    - issue_session: {ttl: 7200}
    - webhook: {event: user.login}
  phone:                      # Authorization: Bearer <token> + encryptedData + iv
    - check_session
    - decrypt: {kind: phone}
    - watermark: {max_age: 600}
    - mask_guard
    - persist_phone
    - webhook: {event: phone.bound}
    - respond
  phone_code:                 # Authorization: Bearer <token> + the phone button's code
    - check_session
    - phone_code
    - watermark: {max_age: 600}
    - mask_guard
    - persist_phone
    - webhook: {event: phone.bound}
    - respond
  phone_cloud:                # Authorization: Bearer <token> + the event's cloudID (cloud development)
    - check_session
    - cloud_data: {kind: phone}
    - watermark: {max_age: 600}
    - mask_guard
    - persist_phone
    - webhook: {event: phone.bound}
    - respond
  phone_oneshot:              # code (wx.login) + encryptedData + iv, no token: login and phone at once
    - rate_limit: {per: ip, limit: 60, window: 60}
    - code2session
    - persist_user
    - decrypt: {kind: phone}
    - watermark: {max_age: 600}
    - mask_guard
    - persist_phone
    - webhook: {event: phone.bound}
    - respond
  userinfo:                   # Authorization: Bearer <token> + encryptedData + iv (+ rawData + signature)
    - check_session
    - decrypt: {kind: userinfo}
    - verify_signature
    - watermark: {max_age: 600}
    - respond
  userinfo_cloud:             # Authorization: Bearer <token> + cloudID from wx.getUserProfile
    - check_session
    - cloud_data: {kind: userinfo}
    - watermark: {max_age: 600}
    - respond

apps:
  demo:
    appid: wx0000000000demo0
    secret: ${WXGATE_DEMO_SECRET:-sandbox-demo-secret}
    # `sandbox`: the fake WeChat served by the gateway under /_sandbox/. For your real mini
    # program: its appid above, `secret: ${MY_APP_SECRET}`, and
    # upstream: https://api.weixin.qq.com
    upstream: sandbox
"""


def add_init(sub: Subcommands) -> None:
    parser = add_command(sub, "init", _init, help=f"write a commented starter {FILE_NAME} (never over an existing one)")
    parser.add_argument("dir", nargs="?", default=".", help="where to write it (default: here; created if missing)")


def _init(args: argparse.Namespace) -> int:
    target = Path(args.dir) / FILE_NAME
    if target.exists():
        raise CLIError(f"{target} exists; wxgate init does not overwrite a configuration", USAGE_ERROR)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # "x": a file that appeared meanwhile is not overwritten either
        with target.open("x", encoding="utf-8") as out:
            out.write(STARTER)
    except FileExistsError as exc:
        raise CLIError(f"{target} exists; wxgate init does not overwrite a configuration", USAGE_ERROR) from exc
    except OSError as exc:
        raise CLIError(f"cannot write {target}: {exc.strerror}", RUNTIME_FAILURE) from exc
    print(f"wrote {target}; start it with: wxgate serve" + ("" if args.dir == "." else f" --config {target}"))
    return 0
