"""Persistence of accounts: users, sessions, API tokens, one-time sign-in links and failed sign-ins.

Same SQLite connection as `Database` (the schema lives in db.MIGRATIONS); every secret is stored as a hash only.
Everything a second worker process would need (sessions, throttles, rate counts) is a row here, not memory.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite

from .sql import placeholders
from .timestamps import ago, later, now

OWNER_NAME = "owner"


def user_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "username": row["username"], "is_admin": bool(row["is_admin"]),
            "disabled": bool(row["disabled"]), "is_owner": bool(row["is_owner"]), "created_at": row["created_at"],
            "has_password": row["password_hash"] is not None}


USER_COLUMNS = "id, username, password_hash, is_admin, is_owner, disabled, created_at"


def _by_admin(admin_id: int | None) -> tuple[str, tuple]:
    """The WHERE clause and argument that check, in the statement making an admin's change, that the acting admin
    is still one (none for a change from the shell)."""
    if admin_id is None:
        return "", ()
    return " AND EXISTS (SELECT 1 FROM users WHERE id = ? AND is_admin AND NOT disabled)", (admin_id,)


class AccountStore:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        return await (await self.conn.execute(sql, args)).fetchone()

    async def _write(self, sql: str, *args: Any) -> int:
        cur = await self.conn.execute(sql, args)
        await self.conn.commit()
        return cur.rowcount

    # users

    async def ensure_owner(self) -> dict[str, Any]:
        """The owner account (an admin, created on first start without a password); threads from before accounts
        existed become the owner's."""
        row = await self._one(f"SELECT {USER_COLUMNS} FROM users WHERE is_owner = 1")
        if row is None:
            name = OWNER_NAME
            while await self.user_by_name(name) is not None:
                name += "_"
            await self.conn.execute("INSERT INTO users (username, is_admin, is_owner, created_at) VALUES (?, 1, 1, ?)",
                                    (name, now()))
            row = await self._one(f"SELECT {USER_COLUMNS} FROM users WHERE is_owner = 1")
        await self.conn.execute("UPDATE threads SET user_id = ? WHERE user_id IS NULL", (row["id"],))
        await self.conn.commit()
        return user_dict(row)

    async def create_user(self, username: str, password_hash: str | None, is_admin: bool = False) -> dict[str, Any]:
        """Raises sqlite3.IntegrityError when the name is taken (names compare case-insensitively)."""
        cur = await self.conn.execute(
            "INSERT INTO users (username, password_hash, is_admin, created_at) VALUES (?, ?, ?, ?)",
            (username, password_hash, int(is_admin), now()))
        await self.conn.commit()
        return await self.user(cur.lastrowid)

    async def signed_on_user(self, username: str) -> dict[str, Any]:
        """The user a single sign-on proxy names, created without a password on their first request."""
        user = await self.user_by_name(username)
        if user is None:
            try:
                user = await self.create_user(username, None)
            except sqlite3.IntegrityError:  # their first two requests came at once: the other one created them
                user = await self.user_by_name(username)
        return user

    async def user(self, user_id: int) -> dict[str, Any] | None:
        row = await self._one(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", user_id)
        return user_dict(row) if row else None

    async def user_by_name(self, username: str) -> dict[str, Any] | None:
        row = await self._one(f"SELECT {USER_COLUMNS} FROM users WHERE username = ?", username)
        return user_dict(row) if row else None

    async def password_hash(self, user_id: int) -> str | None:
        row = await self._one("SELECT password_hash FROM users WHERE id = ?", user_id)
        return row["password_hash"] if row else None

    async def list_users(self) -> list[dict[str, Any]]:
        rows = await (await self.conn.execute(f"SELECT {USER_COLUMNS} FROM users ORDER BY id")).fetchall()
        return [user_dict(r) for r in rows]

    async def update_user(self, user_id: int, *, password_hash: str | None = None, disabled: bool | None = None,
                          is_admin: bool | None = None, by_admin: int | None = None) -> bool:
        """`by_admin`: the admin making the change, who must still be an enabled admin when it is written (in the
        same statement: two admins demoting each other at once leave one of them an admin). False if not."""
        guard, args = _by_admin(by_admin)
        return bool(await self._write(
            "UPDATE users SET password_hash = COALESCE(?, password_hash), disabled = COALESCE(?, disabled),"
            f" is_admin = COALESCE(?, is_admin) WHERE id = ?{guard}",
            password_hash, None if disabled is None else int(disabled), None if is_admin is None else int(is_admin),
            user_id, *args))

    async def delete_user(self, user_id: int, by_admin: int | None = None) -> bool:
        """Threads, sessions and tokens go with the user (cascade). `by_admin` as in update_user."""
        guard, args = _by_admin(by_admin)
        return bool(await self._write(f"DELETE FROM users WHERE id = ?{guard}", user_id, *args))

    # sessions (the cookie holds the secret; the row holds its hash)

    async def create_session(self, user_id: int, secret_hash: str) -> int:
        stamp = now()
        cur = await self.conn.execute(
            "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at) VALUES (?, ?, ?, ?)",
            (secret_hash, user_id, stamp, stamp))
        await self.conn.commit()
        return cur.lastrowid

    async def session(self, secret_hash: str, idle_seconds: float) -> tuple[int, dict[str, Any]] | None:
        """(session id, user) for a live session of an enabled user; a session idle too long is deleted."""
        row = await self._one(
            f"SELECT s.id AS session_id, s.last_seen_at, {', '.join('u.' + c for c in USER_COLUMNS.split(', '))}"
            " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?", secret_hash)
        if row is None or row["disabled"]:
            return None
        if row["last_seen_at"] < ago(idle_seconds):
            await self._write("DELETE FROM sessions WHERE id = ?", row["session_id"])
            return None
        if row["last_seen_at"] < ago(60):  # one write a minute per session, not one per request
            await self._write("UPDATE sessions SET last_seen_at = ? WHERE id = ?", now(), row["session_id"])
        return row["session_id"], user_dict(row)

    async def delete_session(self, session_id: int) -> None:
        await self._write("DELETE FROM sessions WHERE id = ?", session_id)

    async def delete_sessions(self, user_id: int, keep: int | None = None) -> list[int]:
        """End the user's sessions (but `keep`); returns the ids ended."""
        rows = await (await self.conn.execute(
            "SELECT id FROM sessions WHERE user_id = ? AND id IS NOT ?", (user_id, keep))).fetchall()
        await self._write("DELETE FROM sessions WHERE user_id = ? AND id IS NOT ?", user_id, keep)
        return [r["id"] for r in rows]

    async def live_credentials(self, session_ids: set[int], token_ids: set[int],
                               user_ids: set[int]) -> tuple[set[int], set[int], set[int]]:
        """Which of these sessions and API tokens still exist and which of these users are still enabled: what the
        open streams' re-check keeps (auth.OpenStreams.recheck)."""
        async def present(sql: str, wanted: set[int]) -> set[int]:
            if not wanted:
                return set()
            rows = await (await self.conn.execute(sql.format(placeholders(len(wanted))), tuple(wanted))).fetchall()
            return {row[0] for row in rows}

        return (await present("SELECT id FROM sessions WHERE id IN ({})", session_ids),
                await present("SELECT id FROM api_tokens WHERE id IN ({})", token_ids),
                await present("SELECT id FROM users WHERE NOT disabled AND id IN ({})", user_ids))

    # API tokens

    async def create_token(self, user_id: int, name: str, secret_hash: str) -> dict[str, Any]:
        cur = await self.conn.execute(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
            (user_id, name, secret_hash, now()))
        await self.conn.commit()
        return await self.token(user_id, cur.lastrowid)

    async def token(self, user_id: int, token_id: int) -> dict[str, Any] | None:
        row = await self._one("SELECT id, name, created_at, last_used_at FROM api_tokens WHERE id = ? AND user_id = ?",
                              token_id, user_id)
        return dict(row) if row else None

    async def tokens(self, user_id: int) -> list[dict[str, Any]]:
        rows = await (await self.conn.execute(
            "SELECT id, name, created_at, last_used_at FROM api_tokens WHERE user_id = ? ORDER BY id",
            (user_id,))).fetchall()
        return [dict(r) for r in rows]

    async def token_user(self, secret_hash: str) -> tuple[int, dict[str, Any]] | None:
        row = await self._one(
            f"SELECT t.id AS token_id, t.last_used_at, {', '.join('u.' + c for c in USER_COLUMNS.split(', '))}"
            " FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?", secret_hash)
        if row is None or row["disabled"]:
            return None
        if row["last_used_at"] is None or row["last_used_at"] < ago(60):
            await self._write("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", now(), row["token_id"])
        return row["token_id"], user_dict(row)

    async def delete_token(self, user_id: int, token_id: int) -> bool:
        return await self._write("DELETE FROM api_tokens WHERE id = ? AND user_id = ?", token_id, user_id) == 1

    # one-time sign-in links

    async def create_login_link(self, user_id: int, secret_hash: str, ttl_seconds: float) -> None:
        await self.conn.execute("DELETE FROM login_links WHERE expires_at < ?", (now(),))
        await self._write("INSERT INTO login_links (token_hash, user_id, expires_at) VALUES (?, ?, ?)",
                          secret_hash, user_id, later(ttl_seconds))

    async def use_login_link(self, secret_hash: str) -> int | None:
        """The user id of a valid link, which is used up by this call (works once)."""
        row = await self._one("SELECT user_id, expires_at FROM login_links WHERE token_hash = ?", secret_hash)
        if row is None:
            return None
        if await self._write("DELETE FROM login_links WHERE token_hash = ?", secret_hash) != 1:
            return None  # another request used it first
        return row["user_id"] if row["expires_at"] > now() else None

    # failed sign-ins (the throttle survives a restart and is shared by every worker)

    async def reserve_attempt(self, keys: list[str]) -> list[int]:
        """Count a sign-in attempt as a failure of each key before its password is checked, so that guesses sent in
        parallel count each other; `forget_attempt` takes it back. The rows' ids."""
        stamp, ids = now(), []
        for key in keys:
            ids.append((await self.conn.execute("INSERT INTO login_failures (key, at) VALUES (?, ?)",
                                                (key, stamp))).lastrowid)
        await self.conn.commit()
        return ids

    async def forget_attempt(self, ids: list[int]) -> None:
        await self._write(f"DELETE FROM login_failures WHERE id IN ({placeholders(len(ids))})", *ids)

    async def failures(self, key: str, window_seconds: float) -> tuple[int, str | None]:
        """How many failures `key` had within the window, and the oldest of them."""
        row = await self._one("SELECT count(*) AS n, min(at) AS oldest FROM login_failures WHERE key = ? AND at > ?",
                              key, ago(window_seconds))
        return row["n"], row["oldest"]

    async def clear_failures(self, key: str, older_than_seconds: float | None = None) -> None:
        if older_than_seconds is None:
            await self._write("DELETE FROM login_failures WHERE key = ?", key)
        else:
            await self._write("DELETE FROM login_failures WHERE at < ?", ago(older_than_seconds))
