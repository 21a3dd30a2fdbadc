"""Pyodide boots from our own server only, and a broken bundle is explained instead of hanging."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.browser.helpers import ARTIFACTS, boot

pytestmark = pytest.mark.asyncio(loop_scope="session")

VENDOR = "/vendor/pyodide/314.0.7/"
BUNDLE = ["pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"]


async def test_boots_from_the_local_bundle_with_no_external_request(fresh_page, app_server):
    page = fresh_page
    requests, failed, responses = [], [], {}
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failed.append((r.url, r.failure)))
    page.on("response", lambda r: responses.setdefault(r.url.split("?")[0], r))

    seconds = await boot(page, app_server)

    assert requests, "no request recorded"
    foreign = [u for u in requests if not u.startswith(app_server.url + "/") and not u.startswith("data:")]
    assert foreign == [], f"requests left the app's origin: {foreign}"
    assert failed == []
    for name in BUNDLE:
        assert any(u.split("?")[0] == f"{app_server.url}{VENDOR}{name}" for u in requests), f"{name} not loaded"
    wasm = responses[f"{app_server.url}{VENDOR}pyodide.asm.wasm"]
    headers = await wasm.all_headers()
    assert headers["content-type"] == "application/wasm"
    assert "immutable" in headers["cache-control"]
    main_py = responses[f"{app_server.url}/py/main.py"]
    assert (await main_py.all_headers())["cache-control"] == "no-cache"
    assert not any(u.endswith(".map") or "cdn" in u for u in requests)
    assert page.problems == []
    # The app is up: the sidebar and its controls are there.
    await page.wait_for_selector("[data-testid=new-thread]")
    timings = {"seconds_to_ready": round(seconds, 3),
               "pyodide_ms": await page.get_attribute("html", "data-pyodide-ms"),
               "ready_ms": await page.get_attribute("html", "data-ready-ms"),
               "requests": len(requests)}
    (ARTIFACTS / "boot-timing.json").write_text(json.dumps(timings, indent=2))


async def test_missing_lock_file_is_explained(fresh_page, app_server):
    page = fresh_page

    async def missing(route):
        await route.fulfill(status=404, content_type="application/json",
                            body='{"error": {"code": "vendor_file_missing", "message": "not installed"}}')

    await page.route("**/pyodide-lock.json*", missing)
    await page.goto(app_server.url)
    await page.wait_for_selector("html[data-app-state=error]", timeout=30_000)
    text = await page.inner_text("#boot")
    assert "pyodide-lock.json" in text and "vendor_pyodide.sh" in text


async def test_wrong_wasm_content_type_is_explained_not_a_hang(fresh_page, app_server):
    page = fresh_page

    async def octet_stream(route):
        response = await route.fetch()
        await route.fulfill(response=response, headers={**response.headers,
                                                        "content-type": "application/octet-stream"})

    await page.route("**/pyodide.asm.wasm*", octet_stream)
    await page.goto(app_server.url)
    await page.wait_for_selector("html[data-app-state=error]", timeout=30_000)
    text = await page.inner_text("#boot")
    assert "application/wasm" in text and "application/octet-stream" in text


async def test_static_files_have_explicit_types_and_no_listing_or_traversal(app_server):
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        expected = {
            "/": "text/html; charset=utf-8",
            "/style.css": "text/css; charset=utf-8",
            "/boot.js": "text/javascript; charset=utf-8",
            "/py/main.py": "text/x-python; charset=utf-8",
            f"{VENDOR}pyodide.mjs": "text/javascript; charset=utf-8",
            f"{VENDOR}pyodide.asm.mjs": "text/javascript; charset=utf-8",
            f"{VENDOR}pyodide.asm.wasm": "application/wasm",
            f"{VENDOR}python_stdlib.zip": "application/zip",
            f"{VENDOR}pyodide-lock.json": "application/json",
        }
        for path, content_type in expected.items():
            resp = await http.head(path)
            assert resp.status_code == 200, path
            assert resp.headers["content-type"] == content_type, path
            cache = resp.headers["cache-control"]
            assert ("immutable" in cache) if path.startswith("/vendor/") else (cache == "no-cache"), path
        for path in ["/vendor/", "/vendor/pyodide/", "/py/", f"{VENDOR}.complete", "/vendor/../server/app.py",
                     "/vendor/%2e%2e/%2e%2e/server/app.py", "/py/..%2fserver%2fapp.py", "/py/../../pyproject.toml"]:
            resp = await http.get(path)
            assert resp.status_code == 404, path
            assert "import" not in resp.text and "[project]" not in resp.text, path
        missing = await http.get(f"{VENDOR}nope.wasm")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "vendor_file_missing"
        assert "vendor_pyodide.sh" in missing.json()["error"]["message"]
