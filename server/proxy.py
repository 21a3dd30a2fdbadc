"""The client's address: taken from X-Real-IP / X-Forwarded-For only when the request came from a trusted proxy;
and the log lines that show it."""

from __future__ import annotations

import ipaddress
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_log import AccessLogger

from .credentials import TOKEN_PREFIX

TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)


def client_address(request: web.BaseRequest, trusted: tuple[str, ...]) -> str | None:
    peer = request.remote
    if peer not in trusted:
        return peer
    real_ip = request.headers.get("X-Real-IP")
    if real_ip:
        return _address(real_ip, peer)
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        return _address(forwarded.split(",")[-1], peer)  # the hop our trusted proxy appended
    return peer


def _address(value: str, peer: str | None) -> str | None:
    """An IP address as its canonical text, or the peer's when the header holds anything else (it keys the sign-in
    throttle and is written to the database and the log)."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return peer


def _trusted_proxies(request: web.BaseRequest) -> tuple:
    """The app's trusted proxies; none for a request the HTTP parser refused (a missing Host, a URL over 8 KB),
    which never reached routing and so has no app: `request.app` asserts there, it does not raise AttributeError."""
    try:
        return request.app[TRUSTED_PROXIES]
    except (AssertionError, AttributeError):
        return ()


_SECRET_KEYS = frozenset({"token", "access_token", "api_key", "key", "password", "secret"})


class ProxyAwareAccessLogger(AccessLogger):
    """Access log lines show the real client, not nginx's loopback address, and no sign-in secret."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        client = client_address(request, _trusted_proxies(request))
        # A one-time sign-in secret (`token`) never reaches the log, nor an API token or password put in any
        # query parameter by mistake (the API takes them only in headers and bodies, so that request is a 401).
        hidden = [key for key, value in request.query.items()
                  if key.lower() in _SECRET_KEYS or value.startswith(TOKEN_PREFIX)]
        if client != request.remote or hidden:
            request = _LoggedRequest(request, client, hidden)  # type: ignore[assignment]
        super().log(request, response, time)


class _LoggedRequest:
    """What an access log line reads of a request, with the client's address and the path changed. Not
    `request.clone()`: aiohttp refuses to clone a request whose body was read, i.e. after every POST, and the
    logger's exception then dropped the line and the keep-alive connection (502s behind nginx)."""

    def __init__(self, request: web.BaseRequest, remote: str | None, hidden: list[str]) -> None:
        self._request = request
        self.remote = remote
        url = request.rel_url.update_query({key: "[hidden]" for key in hidden}) if hidden else request.rel_url
        self.path_qs = url.path_qs

    def __getattr__(self, name: str):  # method, version, headers...: the request's own
        return getattr(self._request, name)


class MalformedRequestsInOneLine(logging.Filter):
    """For the `aiohttp.server` logger: aiohttp logs a request its HTTP parser refused (a URL over 8 KB, a broken
    header line) at ERROR with a traceback quoting the raw request, so anyone could fill the log with tracebacks and
    a secret in a URL would be written out. It is the client's mistake, answered 400: one WARNING line naming it."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
            record.msg, record.args = f"{record.getMessage()}: {type(error).__name__} ({error.code})", ()
            record.exc_info = record.exc_text = None
        return True
