"""tickwire: a self-hosted gateway that streams market data over authenticated WebSockets."""

__version__ = "0.1.0"
