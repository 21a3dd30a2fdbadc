"""The web's own attacks: DNS rebinding (Host allow-list), CSRF (JSON + same-site Origin), and the page's headers.

Order of the middlewares (app.py): errors -> check_host -> authenticate -> check_csrf -> route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from .auth import CREDENTIAL
from .errors import ApiError
from .keys import SETTINGS
from .page_headers import PAGE_HEADERS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(value: str) -> str:
    """The name part of a Host header or URL netloc: `Example.com:8080` -> `example.com`, `[::1]:80` -> `::1`."""
    return (urlsplit(f"//{value}").hostname or "") if value else ""


@web.middleware
async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if "*" not in settings.allowed_hosts:
        name = host_name(request.headers.get("Host", ""))
        if name not in settings.served_hosts():
            raise ApiError(421, "host_not_allowed",
                           f"This server does not answer for the host {name or '(none)'!r}; its operator can add it "
                           "with --allowed-hosts.")
    return await handler(request)


@web.middleware
async def check_csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A state change by an ambient credential (cookie, SSO header, no auth) must come from our own pages: a JSON
    body (a cross-site form or a no-preflight fetch cannot send one) and a same-site Origin (or Referer)."""
    if request.method in SAFE_METHODS or not request.path.startswith("/api/") \
            or request.get(CREDENTIAL, "").startswith("token:"):
        return await handler(request)
    if request.content_type != "application/json":
        raise ApiError(403, "csrf_rejected", "A state-changing request must send Content-Type: application/json.")
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source or source == "null":
        raise ApiError(403, "csrf_rejected", "A state-changing request must carry an Origin (or Referer) header.")
    origin = urlsplit(source)
    host = request.headers.get("Host", "")
    name = host_name(origin.netloc)
    if name != host_name(host) and name not in request.app[SETTINGS].served_hosts() \
            or not same_port(origin, host):
        raise ApiError(403, "csrf_rejected", "This request came from another site.")
    return await handler(request)


DEFAULT_PORTS = {"http": 80, "https": 443}


def same_port(origin, host: str) -> bool:
    """Whether the page's origin is on the port the request came to, when the Host header says which (the app
    reached directly, as `just run` serves it): another program on the same machine (`http://localhost:9999`) is
    another origin. Behind nginx, Host is the bare name (`proxy_set_header Host $host`) and only the name counts."""
    try:
        wanted = urlsplit(f"//{host}").port
        port = origin.port or DEFAULT_PORTS.get(origin.scheme)
    except ValueError:  # a port that is not a number, or out of range
        return False
    return wanted is None or port == wanted


async def add_page_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response gets the security headers and no version banner."""
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/"):  # conversations and accounts: no browser or proxy cache may keep them
        response.headers.setdefault("Cache-Control", "no-store")
    response.headers["Server"] = "pinchat"
