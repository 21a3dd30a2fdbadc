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
    """Access log lines show the real client, not nginx's loopback address, and no sign-in secret."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        trusted = request.app[TRUSTED_PROXIES] if hasattr(request, "app") else ()
        client = client_address(request, trusted)
        changes: dict = {}
        if client != request.remote:
            changes["remote"] = client
        if "token" in request.query:  # a one-time sign-in secret never reaches the log
            changes["rel_url"] = request.rel_url.update_query(token="[hidden]")
        if changes:
            request = request.clone(**changes)
        super().log(request, response, time)
