"""Dialects: sans-I/O translators between a service's wire protocol and the core."""
