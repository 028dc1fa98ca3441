"""Keyplane: an API key service (issue, list, update, rotate, revoke and verify keys)."""

import warnings

__version__ = "0.1.0"

# Connexion imports Starlette's test client when it loads, and Starlette warns there that
# it wants `httpx2`; Keyplane serves with Connexion and never uses that test client.
warnings.filterwarnings(
    "ignore",
    message=r"Using `httpx` with `starlette.testclient` is deprecated",
)
