"""Clients: the Python SDK and the ``tickwire`` command line."""
