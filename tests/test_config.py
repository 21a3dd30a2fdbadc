"""Configuration: models.yaml loading and the command line."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from server.config import parse_args
from server.provider import ModelConfigError, build_router, context_window, group_names, load_model_config

EXAMPLE = Path(__file__).resolve().parent.parent / "models.example.yaml"


def test_example_groq_entry_and_fallback_build_a_router(tmp_path, monkeypatch):
    # Uncomment the Groq block and the fallback line, as the file tells a user to.
    lines = EXAMPLE.read_text().splitlines()
    end = next(i for i, line in enumerate(lines) if "Other providers" in line)
    yaml_line = re.compile(r"^  # (- |  )")  # commented YAML, not prose
    enabled = [line.replace("# ", "", 1) if i < end and yaml_line.match(line) else line
               for i, line in enumerate(lines)]
    enabled = [line.replace("# fallbacks", "fallbacks") for line in enabled]
    models = tmp_path / "models.yaml"
    models.write_text("\n".join(enabled))
    monkeypatch.setenv("GROQ_API_KEY", "gsk-test")
    config = load_model_config(models)
    assert [m["model_name"] for m in config["model_list"]] == ["chat", "chat-fallback", "utility", "chat-offline"]
    assert config["router_settings"]["fallbacks"] == [{"chat": ["chat-fallback"]}]
    router = build_router(models, pool_size=1)
    assert group_names(router) == {"chat", "chat-fallback", "utility", "chat-offline"}
    assert context_window(router, "chat-offline") == 2048


def test_example_as_shipped_is_refused_with_a_clear_message():
    with pytest.raises(ModelConfigError, match="model_name: chat"):
        load_model_config(EXAMPLE)


def test_broken_yaml_is_refused(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("model_list: [unclosed")
    with pytest.raises(ModelConfigError, match="m.yaml is not valid YAML: .* at line 1, column 22") as refused:
        load_model_config(bad)
    assert "\n" not in str(refused.value)  # one line


def test_flags_and_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PINCHAT_PORT", "9999")
    monkeypatch.setenv("PINCHAT_HEARTBEAT", "2.5")
    settings = parse_args(["--db", str(tmp_path / "a.db"), "--host", "0.0.0.0"])
    assert (settings.port, settings.heartbeat, settings.host) == (9999, 2.5, "0.0.0.0")
    assert parse_args(["--port", "7000"]).port == 7000  # a flag wins over the environment
    with pytest.raises(SystemExit):
        parse_args(["--models", str(tmp_path / "missing.yaml")])


@pytest.mark.parametrize("flags, says", [
    (["--port", "70000"], "--port: 70000 is out of range: 0 to 65535"),
    (["--detach-grace", "-5"], "--detach-grace: -5 is out of range"),
    (["--parent-share", "3"], "--parent-share: 3 is out of range: 0 to 1"),
    (["--max-generations", "0"], "--max-generations: 0 is out of range: 1 or more"),
    (["--db", "/tmp"], "--db: /tmp is a directory"),
    (["--loop", "fast"], "--loop: choose auto or asyncio"),
    (["--trusted-proxies", "127.0.0.1,not-an-ip"], "--trusted-proxies: 'not-an-ip' is not an IP address"),
])
def test_a_bad_flag_is_one_clear_line(flags, says, capsys):
    """A value the server cannot use is refused before it starts, in one line naming the flag (not a traceback
    later, not a port wrapped round to another one, not argparse's whole usage first)."""
    with pytest.raises(SystemExit) as refused:
        parse_args(flags)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err


def test_minus_one_detach_grace_and_port_zero_are_allowed():
    settings = parse_args(["--detach-grace", "-1", "--port", "0"])
    assert (settings.detach_grace, settings.port) == (-1, 0)


def test_importing_the_server_package_keeps_litellm_offline():
    """Whoever imports server modules (not only `python -m server`) gets LiteLLM's bundled price map, not a
    download at import; a value the user set stays."""
    import subprocess
    import sys

    code = "import os, server; print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'])"
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "True"
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "False"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_the_examples_openai_compatible_entries_build_a_router_that_knows_the_served_model(tmp_path, monkeypatch):
    """Each `openai_compatible/` entry of models.example.yaml, uncommented as written, is a valid deployment; the
    model map's context window and tokenizer are found by the served model's own name (gpt-4o-mini: 128k)."""
    from server.provider import configure_litellm, counting_model

    configure_litellm()  # as the app factory does before it builds the Router: registers the route
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "Other providers" in line)
    entries, current = [], []
    for line in lines[start:]:
        if line.startswith("  # - model_name:") or not line.startswith("  #   "):
            if current:
                entries.append(current)
            current = [line] if line.startswith("  # - model_name:") else []
        elif current:
            current.append(line)
    entries = ["\n".join(line.replace("# ", "", 1) for line in entry) for entry in entries]
    assert len(entries) == 6 and all("openai_compatible/" in entry for entry in entries)
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    for entry in entries:
        models = tmp_path / "models.yaml"
        models.write_text("model_list:\n" + entry + "\n")
        router = build_router(models, pool_size=1)
        assert group_names(router) == {"chat"}
    assert counting_model(router) == "gpt-4o-mini"  # the last entry: OpenAI itself
    assert context_window(router) == 128000
