"""What the sign-in form, the account panel and the users panel say: plain Python (no `js`), tested under CPython.

The views (signin_view.py, account_view.py, users_view.py) only put these strings into the DOM.
"""

from __future__ import annotations

__all__ = ["MIN_PASSWORD", "LOGIN_URL_COMMAND", "login_url_command", "expired_note", "signin_hint", "signin_expired", "signin_error", "password_problem",
           "when", "user_flags", "can_manage", "sort_users", "token_label", "retry_phrase", "action_error",
           "code_spans"]

MIN_PASSWORD = 8  # the server's rule (422 weak_password below it)
LOGIN_URL_COMMAND = "just users login-url"


def login_url_command(origin: str) -> str:
    """The command that prints a sign-in link for this very address: without `--base-url` it would print
    `http://localhost:$PINCHAT_PORT/`, which is wrong behind nginx or on another port."""
    return f"{LOGIN_URL_COMMAND} --base-url {origin.rstrip('/')}/"


def expired_note(origin: str) -> str:
    return ("That sign-in link was already used or has expired: each link works once, for a short while. "
            f"Get a new one on the server with `{login_url_command(origin)}` (add a user name for someone else), "
            "or sign in with a password below.")


def signin_hint(origin: str) -> str:
    return ("No password yet? The server prints a one-time sign-in link when it starts; "
            f"`{login_url_command(origin)}` prints a fresh one.")


def code_spans(text: str) -> list[tuple[bool, str]]:
    """`run `x` now` -> [(False, "run "), (True, "x"), (False, " now")]: the views show the True parts as <code>."""
    return [(i % 2 == 1, part) for i, part in enumerate(text.split("`")) if part]


def signin_expired(hash_value: str) -> bool:
    """The server sends a used, expired or bad sign-in link to `/#signin-expired`."""
    return hash_value.lstrip("#").split("&")[0] == "signin-expired"


def retry_phrase(retry_after: str | None) -> str:
    """`Retry-After: 42` -> "Try again in 42 seconds."; a date or nothing -> "Try again later."."""
    try:
        seconds = int(str(retry_after).strip())
    except (TypeError, ValueError):
        return "Try again later."
    if seconds <= 1:
        return "Try again in a second."
    if seconds < 120:
        return f"Try again in {seconds} seconds."
    return f"Try again in {round(seconds / 60)} minutes."


def signin_error(status: int, code: str, message: str, retry_after: str | None = None) -> str:
    """The line under the sign-in form after a failed attempt: the server's own message when it sent one."""
    message = (message or "").strip()
    if status == 0:
        return message or "Cannot reach the server."
    if status == 429:
        base = message or "Too many sign-in attempts."
        return f"{base} {retry_phrase(retry_after)}" if "try again" not in base.lower() else base
    if status == 401:
        return message or "Wrong user name or password."
    if status == 403 and code == "csrf_rejected":
        return message or "The server refused the request (cross-site check). Reload the page and try again."
    return message or f"Sign-in failed (HTTP {status})."


def action_error(status: int, message: str, retry_after: str | None = None) -> str:
    """A failed action in a panel: the server's message, and when to try again after a 429."""
    message = (message or "").strip() or f"The server answered HTTP {status}."
    if status == 429 and "try again" not in message.lower():
        message = f"{message} {retry_phrase(retry_after)}"
    return message


def password_problem(new: str, repeat: str | None = None) -> str | None:
    """What is wrong with a new password before it is even sent (the server checks it again)."""
    if len(new) < MIN_PASSWORD:
        return f"The new password needs at least {MIN_PASSWORD} characters."
    if repeat is not None and new != repeat:
        return "The two new passwords differ."
    return None


def when(value) -> str:
    """`2026-01-02T03:04:05.678Z` -> `2026-01-02 03:04`; nothing -> `never`."""
    text = str(value or "").strip()
    if not text:
        return "never"
    return text[:16].replace("T", " ")


def user_flags(user: dict, me_id: int | None) -> list[str]:
    """The badges of a user row, in order: you, owner, admin, disabled, no password."""
    flags = []
    if me_id is not None and user.get("id") == me_id:
        flags.append("you")
    if user.get("is_owner"):
        flags.append("owner")
    if user.get("is_admin"):
        flags.append("admin")
    if user.get("disabled"):
        flags.append("disabled")
    if not user.get("has_password", True):
        flags.append("no password")
    return flags


def can_manage(user: dict, me_id: int | None) -> bool:
    """Whether a user row offers Disable / Remove: not for yourself, nor for the owner (the server refuses both)."""
    return user.get("id") != me_id and not user.get("is_owner")


def sort_users(users: list[dict]) -> list[dict]:
    """Enabled before disabled, then by name (case-insensitive)."""
    return sorted(users, key=lambda u: (bool(u.get("disabled")), str(u.get("username", "")).lower(), u.get("id", 0)))


def token_label(token: dict) -> str:
    """A token row's second line: when it was made and last used."""
    return f"created {when(token.get('created_at'))} · last used {when(token.get('last_used_at'))}"
