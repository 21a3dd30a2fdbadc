"""The `openai_compatible/` route (server/openai_compatible.py) through the app, LiteLLM's Router and the scripted
upstream: what it sends, and what it does with what OpenAI-compatible servers answer. Fallbacks, usage, finish
reason and cancellation on every route are in tests/test_routes.py; every other server test runs on this route
(tests/conftest.py's default)."""

from __future__ import annotations

import socket

import yaml

from tests.conftest import write_models_file
from tests.fake_upstream import Script
from tests.test_chat_stream import answer_row, kinds
from tests.test_sse_coalescing import TOKENS, BurstyLink


def text_of(events: list[dict]) -> str:
    return "".join(e["text"] for e in events if e["type"] == "token")


async def test_the_request_names_the_deployment_model_with_its_key_and_asks_for_usage(app, fake):
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "token", "done"]
    request = fake.records[0]
    assert request.body["model"] == "fake-model"  # the deployment's name after the route's prefix
    assert request.body["messages"][-1] == {"role": "user", "content": "hello"}
    assert (request.body["stream"], request.body["stream_options"]) == (True, {"include_usage": True})
    assert request.headers["Authorization"] == "Bearer sk-fake"
    assert "max_retries" not in request.body  # the Router's own setting is not sent upstream


async def test_a_server_that_sends_no_usage_still_ends_with_its_finish_reason_and_a_count(app, fake):
    fake.push(Script(tokens=["no ", "usage ", "here"], finish_reason="length", send_usage=False))
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "token", "done"]
    assert text_of(events) == "no usage here"
    assert events[-1]["finish_reason"] == "length"
    assert events[-1]["usage"]["completion_tokens"] == 3  # LiteLLM counts what the server did not say
    row = answer_row(app, events[0]["message_id"])
    assert (row["status"], row["content"], row["finish_reason"]) == ("complete", "no usage here", "length")


async def test_an_error_event_before_the_first_token_falls_back(tmp_path, make_app, settings, fake, backup):
    app = await make_app(settings, models=write_models_file(tmp_path / "models.yaml", fake, backup))
    fake.push(Script(error_after=0))
    backup.push(Script(tokens=["from ", "the ", "backup"]))
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "token", "done"]
    assert text_of(events) == "from the backup"
    assert [r.outcome for r in fake.records] == ["failed"]
    assert [r.outcome for r in backup.records] == ["completed"]


async def test_an_error_event_after_tokens_ends_the_answer_with_its_text_kept(app, fake):
    fake.push(Script(tokens=["kept ", "text ", "lost"], error_after=2))
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "token", "error"]
    assert text_of(events) == "kept text "
    assert events[-1]["code"] == "provider_error"  # the event's 503: LiteLLM's ServiceUnavailableError
    row = answer_row(app, events[0]["message_id"])
    assert (row["status"], row["content"]) == ("error", "kept text ")


async def test_a_server_that_is_not_there_is_provider_unreachable(tmp_path, make_app, settings):
    with socket.socket() as closed:  # a port that was free a moment ago: nothing listens there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    models = tmp_path / "gone.yaml"
    models.write_text(yaml.safe_dump({"model_list": [{"model_name": "chat", "litellm_params": {
        "model": "openai_compatible/gone", "api_base": f"http://127.0.0.1:{port}/v1"}}],
        "router_settings": {"num_retries": 0}}))
    app = await make_app(settings, models=models)
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "error"]
    assert events[-1]["code"] == "provider_unreachable"


async def test_a_silent_server_times_out_after_the_deployments_timeout(tmp_path, make_app, settings, fake):
    models = tmp_path / "slow.yaml"
    models.write_text(yaml.safe_dump({"model_list": [{"model_name": "chat", "litellm_params": {
        "model": "openai_compatible/slow", "api_base": fake.url, "timeout": 0.5}}],
        "router_settings": {"num_retries": 0}}))
    app = await make_app(settings, models=models)
    fake.push(Script(tokens=["too ", "late"], first_delay=3))
    thread = await app.new_thread()

    events = await app.chat(thread["id"], "hello")

    assert kinds(events) == ["start", "error"]
    assert events[-1]["code"] == "provider_timeout"
    assert "Authorization" not in fake.records[0].headers  # no api_key in the deployment: none sent


async def test_the_tokens_of_one_read_are_one_event_with_every_character_in_order(tmp_path, make_app, settings,
                                                                                   fake):
    """Under load the loop reads the upstream late and one read brings several tokens: they become one event, so
    LiteLLM's per-chunk work (and ours) is paid once for them. Here a link delivers the upstream's bytes in 50 ms
    bursts."""
    link = await BurstyLink(fake, window=0.05).start()
    try:
        app = await make_app(settings, models=write_models_file(tmp_path / "bursty.yaml", link))  # type: ignore[arg-type]
        fake.push(Script(tokens=TOKENS, delay=0.005))
        thread = await app.new_thread()

        events = await app.chat(thread["id"], "go")
    finally:
        await link.close()

    tokens = [e for e in events if e["type"] == "token"]
    assert [e["type"] for e in events] == ["start"] + ["token"] * len(tokens) + ["done"]
    assert text_of(events) == "".join(TOKENS)  # exact, in order
    assert len(tokens) < len(TOKENS) / 4  # ~0.4 s of tokens in 50 ms bursts: a handful of events
    assert [e["id"] for e in events] == [f"{events[0]['message_id']}.{n}" for n in range(1, len(events) + 1)]
    assert events[-1]["usage"]["completion_tokens"] == len(TOKENS)  # the upstream's count, not the events'
    row = answer_row(app, events[0]["message_id"])
    assert (row["status"], row["content"]) == ("complete", "".join(TOKENS))
