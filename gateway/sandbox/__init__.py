"""The fake WeChat upstream and device simulator, so wxgate runs with no credentials."""

from gateway.sandbox.server import make_sandbox_app, sandbox_routes
from gateway.sandbox.world import SandboxApp, SandboxWorld

__all__ = ["SandboxApp", "SandboxWorld", "make_sandbox_app", "sandbox_routes"]
