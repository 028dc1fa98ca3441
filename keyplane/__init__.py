"""Keyplane: an API key service (issue, list, update, rotate, revoke and verify keys)."""

__version__ = "0.1.0"
