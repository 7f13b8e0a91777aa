"""``wxgate decrypt`` and ``wxgate encrypt``: WeChat's open-data cipher by hand, for support and test vectors."""

from __future__ import annotations

import argparse
import json

from gateway.cli.base import RUNTIME_FAILURE, USAGE_ERROR, CLIError, Subcommands, add_command
from gateway.wechat import crypto


def add_decrypt(sub: Subcommands) -> None:
    parser = add_command(sub, "decrypt", _decrypt, help="decrypt open data and print the JSON object")
    parser.add_argument("--appid", required=True, help="your appid: the watermark must match it")
    parser.add_argument("--session-key", required=True, help="the user's session_key (base64)")
    parser.add_argument("--iv", required=True, help="iv (base64)")
    parser.add_argument("--data", required=True, help="encryptedData (base64)")


def add_encrypt(sub: Subcommands) -> None:
    parser = add_command(sub, "encrypt", _encrypt, help="encrypt a JSON object as WeChat does (test vectors)")
    parser.add_argument("--session-key", required=True, help="session_key (base64)")
    parser.add_argument("--json", required=True, help="the plaintext JSON object")


# Key, iv and data that do not decode count as a failed decryption (exit 1) rather than a usage error:
# they are captured from a device, and whether they hold together is what the command finds out.
def _decrypt(args: argparse.Namespace) -> int:
    try:
        payload = crypto.decrypt_json(args.session_key, crypto.repair_base64(args.iv), crypto.repair_base64(args.data))
    except crypto.MalformedInput as exc:
        raise CLIError(str(exc), RUNTIME_FAILURE) from exc
    except crypto.DecryptionFailed as exc:
        raise CLIError("decryption failed (wrong session key, iv or data)", RUNTIME_FAILURE) from exc
    mark = payload.get("watermark")
    appid = mark.get("appid") if isinstance(mark, dict) else None
    if appid != args.appid:
        raise CLIError(f"watermark appid {appid!r} is not {args.appid!r}", RUNTIME_FAILURE)
    print(json.dumps(payload, ensure_ascii=False, indent=2))
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.json)
        if not isinstance(payload, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise CLIError(str(exc), USAGE_ERROR) from exc
    try:
        data, iv = crypto.encrypt_json(args.session_key, payload)
    except crypto.MalformedInput as exc:
        raise CLIError(str(exc), RUNTIME_FAILURE) from exc  # as decrypt treats a key that does not decode
    print(json.dumps({"encryptedData": data, "iv": iv}))
    return 0
