"""wxgate: a gateway for WeChat mini-program back ends.

This module is the public plugin API (version 1): everything a third-party step or
storage needs is importable from here.
"""

from gateway.context import Context, Outcome, Session
from gateway.errors import GatewayError
from gateway.secret import Secret
from gateway.step import STEP_API_VERSION, Step, StepOptions
from gateway.storage import STORAGE_API_VERSION, LoginSession, SessionKeys, Storage, StorageOptions

__version__ = "0.1.0"

__all__ = [
    "STEP_API_VERSION",
    "STORAGE_API_VERSION",
    "Context",
    "GatewayError",
    "LoginSession",
    "Outcome",
    "Secret",
    "Session",
    "SessionKeys",
    "Step",
    "StepOptions",
    "Storage",
    "StorageOptions",
    "__version__",
]
