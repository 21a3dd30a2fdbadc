"""Fuzz the real server from its own OpenAPI document (schemathesis 4): no input reaches a 500, every response
matches the document, and two users never see each other's data.

The app (server.app.create_app, the scripted fake upstream behind it) runs on a real port in a thread of its own,
since schemathesis calls it with blocking `requests`. Three callers, each with a personal API token: `ann` and
`bob` (plain users) and the owner (an admin). Path ids are now and then swapped for another caller's thread or
token ids: those must answer 404, and no response to one user may name a thread of another.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

import requests  # noqa: E402  (schemathesis's own transport)
from aiohttp import web  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,  # noqa: E402
                                               response_schema_conformance, status_code_conformance)

from server.config import Settings  # noqa: E402
from tests.conftest import api_token, write_models_file  # noqa: E402
from tests.fake_upstream import FakeUpstream  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
USERS = ("ann", "bob", "owner")
THREAD_OPS = {"getThread", "deleteThread", "chat", "cancelThread", "mergeThreads", "exportThread"}
HYPOTHESIS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)


class Live:
    """The app on 127.0.0.1 in a background event loop, plus what each caller owns."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-app", daemon=True)
        self.tokens: dict[str, str] = {}
        self.threads: dict[str, set[int]] = {name: set() for name in USERS}  # thread ids each caller created
        self.token_ids: dict[str, set[int]] = {name: set() for name in USERS}  # the callers' own token ids
        self.user_ids: dict[str, int] = {}
        self.violations: list[str] = []
        self.stolen = 0  # requests aimed at another caller's thread or token

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> Live:
        self.thread.start()
        self.run(self._start())
        for name in USERS:
            me = self.get(name, "/api/auth/me").json()["user"]
            self.user_ids[name] = me["id"]
            self.token_ids[name] = {t["id"] for t in self.get(name, "/api/tokens").json()["tokens"]}
        return self

    async def _start(self) -> None:
        from server.app import create_app
        from server.openapi import openapi_handler

        self.fake = await FakeUpstream().start()
        db = self.root / "fuzz.db"
        self.tokens["owner"] = await api_token(db)
        for name in ("ann", "bob"):
            self.tokens[name] = await api_token(db, name)
        settings = replace(Settings(), host="127.0.0.1", db=db, heartbeat=0, flush_interval=0.1,
                           models=write_models_file(self.root / "models.yaml", self.fake),
                           chats_per_minute=100_000, max_streams_per_user=1000)  # the fuzzer is not a person
        app = create_app(settings)
        if not any(r.resource and r.resource.canonical == "/api/openapi.json" for r in app.router.routes()):
            app.router.add_get("/api/openapi.json", openapi_handler)  # until app.py mounts it
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def stop(self) -> None:
        async def stop() -> None:
            await self.runner.cleanup()
            await self.fake.close()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, who: str, path: str) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers(who), timeout=30)

    def seed(self, who: str) -> None:
        """A thread with an answer and a pin on it, so that there is something to take."""
        http = requests.Session()
        http.headers.update(self.headers(who))
        main = http.post(f"{self.url}/api/threads", json={"title": f"{who}'s"}, timeout=30).json()
        http.post(f"{self.url}/api/threads/{main['id']}/chat", json={"message": "hello"}, timeout=30).content
        answer = http.get(f"{self.url}/api/threads/{main['id']}", timeout=30).json()["messages"][-1]
        pin = http.post(f"{self.url}/api/threads", timeout=30, json={
            "parent_id": main["id"], "anchor": {"message_id": answer["id"], "start": 0, "end": 2}}).json()
        self.threads[who] |= {main["id"], pin["id"]}

    # -- what the callers do ----------------------------------------------------------------------------------

    def others(self, who: str, table: dict[str, set[int]]) -> set[int]:
        return set().union(*(ids for name, ids in table.items() if name != who))

    def aim(self, case: Any, who: str, pick: Any, steal: bool = True) -> int | None:
        """Maybe (`steal`) point the case's path id at another caller's thread or token, or at one's own thread to
        reach the code behind the 404. Returns the id if it is another's. Always keeps a caller from revoking its
        own fuzzing token and the owner from disabling or removing ann or bob: the run needs them."""
        op = case.operation.definition.raw.get("operationId")
        params = case.path_parameters or {}
        if not isinstance(params.get("id"), int) or not 1 <= params["id"] < 2**63:
            return None  # a negative case's wrong id stays wrong
        if op in ("patchUser", "removeUser") and params["id"] in (self.user_ids["ann"], self.user_ids["bob"]):
            params["id"] += 10**12
        # `pick` draws from Hypothesis: it is called the same number of times whatever the pools hold (an empty
        # pool, or a short-circuited condition, that skipped a draw made replays draw differently: Hypothesis then
        # fails the run as FlakyStrategyDefinition)
        elif op == "revokeToken":
            aim_elsewhere = pick([False, True])
            other = pick(sorted(self.others(who, self.token_ids)) or [None])
            if params["id"] in self.token_ids[who] or steal and aim_elsewhere:
                params["id"] = other
                return params["id"]
        elif op in THREAD_OPS and steal:
            choice = pick(["steal", "own", "steal", "keep"])
            pool = {"own": self.threads[who], "steal": self.others(who, self.threads)}.get(choice)
            target = pick(sorted(pool) if pool else [None])
            if pool:
                params["id"] = target
                return params["id"] if choice == "steal" else None
        return None

    def observe(self, who: str, case: Any, response: Any, stolen: int | None) -> None:
        """Remember new threads; flag any answer that lets `who` touch or see another caller's thread or token."""
        op = case.operation.definition.raw.get("operationId")
        label = f"{who}: {case.method} {case.formatted_path} -> {response.status_code}"
        self.stolen += stolen is not None
        if stolen is not None and response.status_code != 404:
            self.violations.append(f"{label}: id {stolen} of another user did not answer 404")
        if op == "deleteThread" and response.status_code == 204:
            self.forget_deleted(who)  # SQLite may give a deleted thread's id to the next new one
        if response.status_code >= 300 or "json" not in str(response.headers.get("content-type")):
            return  # schemathesis's Response: lower-case header names, lists of values
        body = response.json()
        if op in ("createThread", "importThread"):
            self.threads[who].add(body["id"])
        seen = thread_ids(op, body)
        if op == "getThread":
            self.threads[who] |= {p["id"] for p in body.get("pins", [])}  # an import's pins
        foreign = seen & self.others(who, self.threads)
        if foreign:
            self.violations.append(f"{label}: shows threads {sorted(foreign)} of another user")


    def forget_deleted(self, who: str) -> None:
        self.threads[who] = {i for i in self.threads[who] if self.get(who, f"/api/threads/{i}").status_code == 200}


def thread_ids(op: str | None, body: Any) -> set[int]:
    """The thread ids a response names (not message ids: those are another number space)."""
    if not isinstance(body, dict):
        return set()
    threads = []
    if op in ("createThread", "importThread", "getThread"):
        threads = [body, *body.get("pins", [])]
    elif op == "listThreads":
        threads = body.get("threads", [])
    ids = {t.get("id") for t in threads} | {t.get("parent_id") for t in threads}
    ids |= {m.get("thread_id") for m in body.get("messages", []) if isinstance(m, dict)}
    ids |= {i for m in body.get("messages", []) if isinstance(m, dict) for i in (m.get("merged_ids") or [])}
    return {i for i in ids if isinstance(i, int)}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = Live(tmp_path_factory.mktemp("fuzz")).start()
    for who in USERS:
        server.seed(who)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def schema(live):
    loaded = schemathesis.openapi.from_url(f"{live.url}/api/openapi.json")
    loaded.config.output.sanitization.update(enabled=False)  # show the token in a failure's curl line
    return loaded


def call(live: Live, who: str, case: Any, stolen: int | None) -> None:
    response = case.call(headers=live.headers(who), timeout=30)
    live.observe(who, case, response, stolen)
    case.validate_response(response, checks=CHECKS)


def test_every_operation_any_input(live, schema):
    """Stateless: random (positive and negative) requests to every operation, by any of the three callers."""
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=150, **HYPOTHESIS)
    @given(case=cases, who=st.sampled_from(USERS), data=st.data())
    def fuzz(case, who, data):
        def pick(options):  # one fixed strategy, whatever the (growing) pool: replays stay consistent
            return list(options)[data.draw(st.integers(0, 2**16)) % len(options)]

        stolen = live.aim(case, who, pick)
        call(live, who, case, stolen)

    fuzz()
    assert live.violations == []
    assert live.stolen >= 5  # the isolation was really tried


def test_sequences_follow_the_links(live, schema):
    """Stateful: create -> read / chat / merge / export / cancel / delete chains (OpenAPI links), as ann, with
    every third step aimed at bob's threads."""
    steps = {"n": 0}

    class Workflow(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": live.headers("ann"), "timeout": 30}

        def before_call(self, case):
            steps["n"] += 1
            self.stolen = live.aim(case, "ann", lambda options: sorted(options)[-1], steal=steps["n"] % 3 == 0)

        def after_call(self, response, case):
            live.observe("ann", case, response, self.stolen)

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None)

    Workflow.run(settings=settings(max_examples=12, stateful_step_count=6, **HYPOTHESIS))
    assert live.violations == []


def test_afterwards_each_user_sees_only_their_own(live, schema):
    for who in USERS:  # every fuzzing token still works, for the caller it belongs to
        me = live.get(who, "/api/auth/me")
        assert me.status_code == 200 and me.json()["user"]["id"] == live.user_ids[who], (who, me.text)
        listed = {t["id"] for t in live.get(who, "/api/threads").json()["threads"]}
        assert listed <= live.threads[who], f"{who} lists threads of others: {listed - live.threads[who]}"
        for other in live.others(who, live.threads):
            for suffix in ("", "/export?format=json"):
                resp = live.get(who, f"/api/threads/{other}{suffix}")
                assert resp.status_code == 404, f"{who} reads thread {other}{suffix}: {resp.status_code}"
            for method, suffix, body in (("post", "/chat", {"message": "hi"}), ("post", "/cancel", None),
                                         ("post", "/merge", {"format": "transcript", "threads": [other]}),
                                         ("delete", "", None)):
                resp = requests.request(method, f"{live.url}/api/threads/{other}{suffix}", json=body,
                                        headers=live.headers(who), timeout=30)
                assert resp.status_code == 404, f"{who} {method} thread {other}{suffix}: {resp.status_code}"
        for other in sorted(live.others(who, live.threads))[:3]:  # nor pin on it
            resp = requests.post(f"{live.url}/api/threads", headers=live.headers(who), timeout=30, json={
                "parent_id": other, "anchor": {"message_id": 1, "start": 0, "end": 1}})
            assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_pin"
