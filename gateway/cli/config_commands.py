"""The commands that read a configuration without serving it: ``validate``, ``pipelines`` and ``dry-run``."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from gateway.cli.base import RUNTIME_FAILURE, USAGE_ERROR, CLIError, Subcommands, add_command
from gateway.cli.dry_run import run_dry
from gateway.config import ResolvedStep, load_config
from gateway.errors import ConfigError
from gateway.flow_names import FLOWS
from gateway.hooks import Hooks
from gateway.logs import configure_logging
from gateway.pipeline import Pipeline
from gateway.pipeline_check import declared


def add_validate(sub: Subcommands) -> None:
    parser = add_command(sub, "validate", _validate, help="check a configuration file; exit 0 when valid")
    parser.add_argument("config", nargs="?", default=argparse.SUPPRESS, help="YAML file (or --config)")


def add_pipelines(sub: Subcommands) -> None:
    parser = add_command(
        sub, "pipelines", _pipelines, help="show each app's resolved flows with step options (secrets masked)"
    )
    parser.add_argument("config", nargs="?", default=argparse.SUPPRESS, help="YAML file (or --config)")
    parser.add_argument("--app", help="only this app")
    parser.add_argument("--json", action="store_true", help="as JSON")


def add_dry_run(sub: Subcommands) -> None:
    parser = add_command(sub, "dry-run", _dry_run, help="run one flow against the sandbox and show each step")
    parser.add_argument("config", nargs="?", default=argparse.SUPPRESS, help="YAML file (or --config)")
    parser.add_argument("--app", required=True)
    parser.add_argument("--flow", required=True, choices=FLOWS)
    parser.add_argument("--user", default="dry-run-user", help="the simulated WeChat user (default: %(default)s)")
    parser.add_argument("--input", default="{}", help="JSON object of request fields that override the simulated ones")


def _validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for app_flows in config.flows.values():  # steps are built too: one failing to start is an error
        for flow, steps in app_flows.items():
            Pipeline.build(flow, steps)
    Hooks()  # and the installed hook plugins are loaded and checked
    refusal = config.sandbox_bind_refusal()  # what serve would refuse for the file's own address
    if refusal is not None:
        raise ConfigError(refusal)
    count = sum(len(f) for f in config.flows.values())
    print(f"{args.config}: valid ({len(config.apps)} apps, {count} flows, digest {config.digest})")
    return 0


def _pipelines(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    apps = [args.app] if args.app else list(config.apps)
    out: dict[str, Any] = {}
    for name in apps:
        if name not in config.apps:
            raise CLIError(f"no app {name!r} in {args.config}", USAGE_ERROR)
        app = config.apps[name]
        out[name] = {
            "appid": app.appid,
            "secret": "***",
            "upstream": app.upstream,
            "flows": {
                flow: [{step.name: step.options.model_dump(mode="json")} for step in steps]
                for flow, steps in config.flows[name].items()
            },
            # beside "flows", whose {step: options} items scripts already read
            "declared": {flow: [_declared(step) for step in steps] for flow, steps in config.flows[name].items()},
        }
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    for name, app_info in out.items():
        print(f"{name}  appid={app_info['appid']}  upstream={app_info['upstream']}")
        for flow, steps in app_info["flows"].items():
            print(f"  {flow}:")
            for step, facts in zip(steps, app_info["declared"][flow], strict=True):
                ((step_name, options),) = step.items()
                shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
                print(f"    - {step_name}" + (f"  ({shown})" if shown else "") + f"  [{_shown(facts)}]")
    return 0


def _declared(step: ResolvedStep) -> dict[str, list[str] | None]:
    """What the step needs and gives with its options (gives None: the step declares nothing)."""
    found = declared(step)
    return {"needs": list(found.needs), "gives": None if found.gives is None else list(found.gives)}


def _shown(declared: dict[str, list[str] | None]) -> str:
    needs, gives = declared["needs"], declared["gives"]
    gives_text = "not declared" if gives is None else (", ".join(gives) or "nothing")
    return f"needs: {', '.join(needs or ()) or 'nothing'}; gives: {gives_text}"


def _dry_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging("console", level=logging.WARNING)  # the result is the output
    try:
        extra = json.loads(args.input)
        if not isinstance(extra, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise CLIError(f"--input must be a JSON object ({exc})", USAGE_ERROR) from exc
    result = run_dry(config, args.app, args.flow, args.user, extra)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    # the answer is the outcome: a flow that refuses is a failed run, though the command itself worked
    return 0 if 200 <= int(result["status"]) < 300 else RUNTIME_FAILURE
