"""Fails the run if a secret of the tests' gateways appeared in an answer or a log line
(see gateway.pytest_plugin)."""

pytest_plugins = ["gateway.pytest_plugin"]
