"""The live dashboard: ``GET /`` and its few static files (``/static/<name>``).

Plain HTML, CSS and JavaScript from ``server/static/``, no build step; the page speaks
the native protocol at ``/ws`` and reads the market registry at ``/api/v1/markets``
(docs/dashboard.md). The files are read once, when the routes are installed.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

#: The files served under ``/static/`` and their content types; nothing else is served.
STATIC_FILES: dict[str, str] = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}

#: The page loads only its own files and talks only to its own origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _read(name: str) -> bytes:
    return resources.files("tickwire.server").joinpath("static", name).read_bytes()


def install_dashboard(app: web.Application) -> None:
    """Add ``GET /`` (the page) and ``GET /static/{name}`` (its script, style, icon)."""
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    page = _read("index.html")
    files = {name: (_read(name), ctype) for name, ctype in STATIC_FILES.items()}

    async def index(request: web.Request) -> web.Response:
        return web.Response(
            body=page,
            content_type="text/html",
            charset="utf-8",
            headers={**headers, "Content-Security-Policy": CONTENT_SECURITY_POLICY},
        )

    async def static(request: web.Request) -> web.Response:
        hit = files.get(request.match_info["name"])
        if hit is None:
            raise web.HTTPNotFound(text="no such file")
        body, ctype = hit
        charset = None if ctype.startswith("image/") else "utf-8"
        return web.Response(body=body, content_type=ctype, charset=charset, headers=headers)

    async def favicon(request: web.Request) -> web.Response:
        # for clients that ask for /favicon.ico without reading the page's <link rel=icon>
        raise web.HTTPMovedPermanently("/static/favicon.svg")

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", favicon)
