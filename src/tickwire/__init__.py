"""tickwire: a self-hosted gateway that streams market data over authenticated WebSockets.

``tickwire.connect(url, token=…)`` is the Python SDK's entry point (``tickwire.client``),
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tickwire.client.connection import connect

#: The release, read by the build too (pyproject.toml's dynamic version): the one place.
__version__ = "0.1.0"
__all__ = ["__version__", "connect"]


def __getattr__(name: str) -> Any:
    if name == "connect":
        from tickwire.client.connection import connect

        return connect
    raise AttributeError(f"module 'tickwire' has no attribute {name!r}")
