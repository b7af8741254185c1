"""Test your functions against the real lockgate server (a pytest plugin; see lockgate.testing.plugin)."""

from lockgate.testing.kit import LockgateClient, LockgateError, LockgateServer, Run, ServedApp

__all__ = ["LockgateClient", "LockgateError", "LockgateServer", "Run", "ServedApp"]
