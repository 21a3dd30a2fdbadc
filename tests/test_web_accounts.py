"""What the sign-in form and the account / users panels say (web/py/accounts.py), run under CPython."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "web" / "py"))

import accounts  # noqa: E402


def test_expired_link_is_recognised_from_the_hash():
    assert accounts.signin_expired("#signin-expired")
    assert accounts.signin_expired("signin-expired")
    assert not accounts.signin_expired("")
    assert not accounts.signin_expired("#t=3&p=4")
    for text in (accounts.expired_note("https://chat.example.org:8443"), accounts.signin_hint("http://[::1]:81/")):
        assert "just users login-url --base-url " in text
    assert "`just users login-url --base-url https://chat.example.org:8443/`" in accounts.expired_note(
        "https://chat.example.org:8443")
    assert accounts.login_url_command("http://[::1]:81/").endswith("--base-url http://[::1]:81/")


@pytest.mark.parametrize(("value", "phrase"), [
    ("42", "Try again in 42 seconds."),
    ("1", "Try again in a second."),
    ("600", "Try again in 10 minutes."),
    (None, "Try again later."),
    ("Wed, 21 Oct 2026 07:28:00 GMT", "Try again later."),
])
def test_retry_phrase(value, phrase):
    assert accounts.retry_phrase(value) == phrase


def test_signin_errors_prefer_the_servers_message():
    assert accounts.signin_error(401, "invalid_credentials", "Wrong user name or password.") == \
        "Wrong user name or password."
    assert accounts.signin_error(401, "invalid_credentials", "") == "Wrong user name or password."
    assert accounts.signin_error(429, "too_many_attempts", "Too many failed sign-ins.", "30") == \
        "Too many failed sign-ins. Try again in 30 seconds."
    # The server already says when: do not say it twice.
    assert accounts.signin_error(429, "too_many_attempts", "Too many; try again in 5 minutes.", "300") == \
        "Too many; try again in 5 minutes."
    assert accounts.signin_error(0, "unreachable", "Cannot reach the server (x).") == "Cannot reach the server (x)."
    assert accounts.signin_error(500, "http_500", "") == "Sign-in failed (HTTP 500)."


def test_action_errors():
    assert accounts.action_error(409, "That user name is taken.") == "That user name is taken."
    assert accounts.action_error(429, "Slow down.", "3") == "Slow down. Try again in 3 seconds."
    assert accounts.action_error(422, "") == "The server answered HTTP 422."


def test_password_problems():
    assert accounts.password_problem("short") == "The new password needs at least 8 characters."
    assert accounts.password_problem("long enough", "long enougH") == "The two new passwords differ."
    assert accounts.password_problem("long enough", "long enough") is None
    assert accounts.password_problem("long enough") is None
    assert accounts.password_problem("🙂" * 8) is None  # characters, not bytes


def test_when_and_token_label():
    assert accounts.when("2026-01-02T03:04:05.678Z") == "2026-01-02 03:04"
    assert accounts.when(None) == "never"
    assert accounts.token_label({"created_at": "2026-01-02T03:04:05Z", "last_used_at": None}) == \
        "created 2026-01-02 03:04 · last used never"


def test_user_flags_and_order():
    me = {"id": 1, "username": "owner", "is_admin": True, "disabled": False, "has_password": False}
    bob = {"id": 2, "username": "bob", "is_admin": False, "disabled": True, "has_password": True}
    alice = {"id": 3, "username": "Alice", "is_admin": False, "disabled": False, "has_password": True}
    assert accounts.user_flags(me, 1) == ["you", "admin", "no password"]
    assert accounts.user_flags(bob, 1) == ["disabled"]
    assert accounts.user_flags(alice, None) == []
    assert [u["username"] for u in accounts.sort_users([me, bob, alice])] == ["Alice", "owner", "bob"]


def test_code_spans():
    assert accounts.code_spans("run `x --y` now") == [(False, "run "), (True, "x --y"), (False, " now")]
    assert accounts.code_spans("") == []
    assert accounts.code_spans("`a`") == [(True, "a")]


def test_the_owner_and_yourself_cannot_be_disabled_or_removed():
    owner = {"id": 1, "username": "owner", "is_admin": True, "is_owner": True, "disabled": False}
    admin = {"id": 2, "username": "ada", "is_admin": True, "is_owner": False, "disabled": False}
    bob = {"id": 3, "username": "bob", "is_admin": False, "disabled": False}
    assert accounts.user_flags(owner, 2) == ["owner", "admin"]
    assert accounts.user_flags(owner, 1) == ["you", "owner", "admin"]
    assert not accounts.can_manage(owner, 2) and not accounts.can_manage(admin, 2)
    assert accounts.can_manage(bob, 2) and accounts.can_manage(admin, 1)
