"""Serve the browser app (`web/`) and the vendored Pyodide runtime (`web/vendor/`).

Routes (GET and HEAD):

* `/`                     -> `web/index.html`
* `/<name>.css|.js|.html` -> a top-level file of `web/` (e.g. `/style.css`; `/boot.js`, the page's only script)
* `/py/<module>.py`       -> `web/py/<module>.py`, the Python the page runs under Pyodide
* `/vendor/<path>`        -> `web/vendor/<path>`, e.g. `/vendor/pyodide/314.0.7/pyodide.asm.wasm`

Content types are explicit, never guessed: a `.wasm` served as anything but `application/wasm` makes `loadPyodide`
hang for ever, and `.mjs` must be JavaScript for the module MIME check. Vendor files live under a versioned folder,
so they are cached for a year as immutable; the app's own files are `no-cache` (revalidated with their ETag on every
load, so an edit shows up at once). Directory listings are never produced, dot-files are never served and a path
that resolves outside its folder is a 404. A missing vendor file answers a JSON error that says how to fix it.
"""

from __future__ import annotations

import pathlib
import re

from aiohttp import web

from .errors import error_response

__all__ = ["setup_static", "CONTENT_TYPES"]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".py": "text/x-python; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".zip": "application/zip",
    ".whl": "application/zip",  # the Markdown renderer's pure-Python wheels (scripts/vendor_wheels.sh)
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}

APP_CACHE = "no-cache"
VENDOR_CACHE = "public, max-age=31536000, immutable"

# One path segment: no dot-files, no separators. `..` cannot match because a segment must not start with a dot.
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

_WEB_ROOT_KEY = web.AppKey("static_web_root", pathlib.Path)


def setup_static(app: web.Application, web_root: pathlib.Path) -> None:
    """Add the GET routes that serve `web_root` (the repository's `web/` folder). Call after the `/api/` routes."""
    app[_WEB_ROOT_KEY] = pathlib.Path(web_root).resolve()
    app.router.add_get("/", _index)
    app.router.add_get(r"/{name:[A-Za-z0-9_\-]+\.(?:css|js|html|svg|png|ico)}", _top_level)
    app.router.add_get(r"/py/{name:[A-Za-z0-9_]+\.py}", _py_module)
    app.router.add_get(r"/vendor/{tail:.+}", _vendor)


def _not_found(path: str) -> web.Response:
    return error_response(404, "not_found", f"no such file: {path}")


def _resolve(base: pathlib.Path, segments: list[str]) -> pathlib.Path | None:
    """The regular file at base/segments, or None if a segment is unsafe, it escapes base or is no regular file."""
    if not segments or not all(_SEGMENT.match(s) for s in segments):
        return None
    base = base.resolve()
    try:
        resolved = base.joinpath(*segments).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(base) or not resolved.is_file():
        return None
    return resolved


def _file(path: pathlib.Path, cache_control: str) -> web.StreamResponse:
    content_type = CONTENT_TYPES.get(path.suffix.lower())
    if content_type is None:
        # Only types we name are served: a guessed type is how a .wasm ends up as octet-stream.
        return error_response(404, "not_found", f"no content type is configured for {path.name}")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": content_type,
            "Cache-Control": cache_control,
            "X-Content-Type-Options": "nosniff",
        },
    )


async def _index(request: web.Request) -> web.StreamResponse:
    root = request.app[_WEB_ROOT_KEY]
    path = _resolve(root, ["index.html"])
    if path is None:
        return error_response(404, "not_found", f"{root / 'index.html'} is missing")
    return _file(path, APP_CACHE)


async def _top_level(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = _resolve(request.app[_WEB_ROOT_KEY], [name])
    return _not_found(request.path) if path is None else _file(path, APP_CACHE)


async def _py_module(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = _resolve(request.app[_WEB_ROOT_KEY] / "py", [name])
    return _not_found(request.path) if path is None else _file(path, APP_CACHE)


async def _vendor(request: web.Request) -> web.StreamResponse:
    tail = request.match_info["tail"]
    path = _resolve(request.app[_WEB_ROOT_KEY] / "vendor", tail.split("/"))
    if path is None:
        return error_response(
            404,
            "vendor_file_missing",
            f"vendored file /vendor/{tail} is not installed; run scripts/vendor_pyodide.sh (or `just setup`)",
        )
    return _file(path, VENDOR_CACHE)
