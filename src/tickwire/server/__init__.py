"""The server: the aiohttp shell that wires every layer together."""
