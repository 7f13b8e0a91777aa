"""The pipeline engine: steps built once at load, run in YAML order per request."""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import Any

from gateway.config import ResolvedStep
from gateway.context import Context
from gateway.errors import ConfigError, GatewayError, StepFailed
from gateway.step import Step


class Pipeline:
    __slots__ = ("flow", "steps")

    def __init__(self, flow: str, steps: Sequence[tuple[str, Step[Any]]]) -> None:
        self.flow = flow
        self.steps = tuple(steps)

    @classmethod
    def build(cls, flow: str, resolved: Sequence[ResolvedStep]) -> Pipeline:
        steps: list[tuple[str, Step[Any]]] = []
        seen: dict[str, int] = {}
        for spec in resolved:
            seen[spec.name] = seen.get(spec.name, 0) + 1
            # The label keys the step's timing; a step used twice gets '#2'.
            label = spec.name if seen[spec.name] == 1 else f"{spec.name}#{seen[spec.name]}"
            try:
                steps.append((label, spec.cls(spec.options)))
            except Exception as exc:
                raise ConfigError(f"{spec.where}: step {spec.name!r} failed to start: {exc}") from exc
        return cls(flow, steps)

    async def run(self, ctx: Context) -> None:
        timings = ctx.timings
        for label, step in self.steps:
            start = perf_counter()
            try:
                await step(ctx)
            except GatewayError as exc:
                ctx.failed_step = label
                if step.single_use and not exc.spent_nothing:
                    ctx.single_use_spent = True  # it may have reached WeChat: never resend
                raise
            except Exception as exc:
                # A broken step must not take the process down or leak its traceback.
                ctx.failed_step = label
                ctx.single_use_spent = ctx.single_use_spent or step.single_use
                ctx.log.exception("step_crashed", step=label, plugin=type(step).__module__)
                raise StepFailed(log_detail=f"step {label} raised {type(exc).__name__}") from exc
            else:
                if step.single_use:
                    ctx.single_use_spent = True
            finally:
                timings[label] = round((perf_counter() - start) * 1000.0, 3)
