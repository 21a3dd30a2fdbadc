"""The client's address: taken from X-Real-IP / X-Forwarded-For only when the request came from a trusted proxy."""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_log import AccessLogger

TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)


def client_address(request: web.BaseRequest, trusted: tuple[str, ...]) -> str | None:
    peer = request.remote
    if peer not in trusted:
        return peer
    real_ip = request.headers.get("X-Real-IP")
    if real_ip:
        return real_ip.strip()
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        return forwarded.split(",")[-1].strip()  # the hop our trusted proxy appended
    return peer


class ProxyAwareAccessLogger(AccessLogger):
    """Access log lines show the real client, not nginx's loopback address."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        trusted = request.app[TRUSTED_PROXIES] if hasattr(request, "app") else ()
        client = client_address(request, trusted)
        if client != request.remote:
            request = request.clone(remote=client)
        super().log(request, response, time)
