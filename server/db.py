"""Persistence: threads (with pins) and messages in SQLite through aiosqlite, WAL mode, versioned migrations."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from .account_store import AccountStore
from .sql import placeholders
from .timestamps import ago, now

# Each entry moves the schema one version up; PRAGMA user_version records how far a file has come.
MIGRATIONS = [
    """
    CREATE TABLE threads (
        id INTEGER PRIMARY KEY,
        parent_id INTEGER REFERENCES threads(id) ON DELETE CASCADE,
        title TEXT,
        anchor_message_id INTEGER,
        anchor_start INTEGER,
        anchor_end INTEGER,
        anchor_text TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX threads_parent ON threads(parent_id);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        thread_id INTEGER NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL CHECK (status IN ('streaming', 'complete', 'interrupted', 'error')),
        model TEXT,
        usage TEXT,
        finish_reason TEXT,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX messages_thread ON messages(thread_id, id);
    """,
    """
    ALTER TABLE threads ADD COLUMN title_source TEXT;  -- user | first_message | model
    ALTER TABLE threads ADD COLUMN summary TEXT;
    ALTER TABLE threads ADD COLUMN summary_upto INTEGER;  -- the last message id the summary covers
    ALTER TABLE threads ADD COLUMN suggestions TEXT;  -- JSON list of generated starter questions
    ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'chat';  -- chat | merge
    ALTER TABLE messages ADD COLUMN merged_ids TEXT;  -- JSON list of thread ids, for kind = merge
    """,
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT,  -- Argon2id; NULL until set (the owner signs in with a one-time link)
        is_admin INTEGER NOT NULL DEFAULT 0,
        is_owner INTEGER NOT NULL DEFAULT 0,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL
    );
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        last_used_at TEXT
    );
    CREATE TABLE login_links (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE login_failures (id INTEGER PRIMARY KEY, key TEXT NOT NULL, at TEXT NOT NULL);
    CREATE INDEX login_failures_key ON login_failures(key, at);
    ALTER TABLE threads ADD COLUMN user_id INTEGER REFERENCES users(id) ON DELETE CASCADE;
    CREATE INDEX threads_user ON threads(user_id, parent_id);
    """,
    # Session and token ids are never given again (AUTOINCREMENT): streams are held by "session:<id>" (auth.OpenStreams),
    # and a new sign-in that took an ended session's id would keep that session's streams alive.
    """
    CREATE TABLE sessions_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        token_hash TEXT NOT NULL UNIQUE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL
    );
    INSERT INTO sessions_new SELECT id, token_hash, user_id, created_at, last_seen_at FROM sessions;
    DROP TABLE sessions;
    ALTER TABLE sessions_new RENAME TO sessions;
    CREATE TABLE api_tokens_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        last_used_at TEXT
    );
    INSERT INTO api_tokens_new SELECT id, user_id, name, token_hash, created_at, last_used_at FROM api_tokens;
    DROP TABLE api_tokens;
    ALTER TABLE api_tokens_new RENAME TO api_tokens;
    """,
    # Where a message came from: 1 for one brought in by POST /api/import (not answered here).
    """
    ALTER TABLE messages ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;
    """,
    # The answers each user began, for the per-minute limit: kept apart from the messages, which deleting a thread
    # takes away (a script could delete and chat again without limit).
    """
    CREATE TABLE answer_starts (user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE, at TEXT NOT NULL);
    CREATE INDEX answer_starts_user ON answer_starts(user_id, at);
    """,
]
ANSWER_STARTS_KEPT = 3600  # seconds an answer start is remembered (the limit looks back one minute)

THREAD_COLUMNS = ("id, user_id, parent_id, title, title_source, anchor_message_id, anchor_start, anchor_end, anchor_text,"
                  " summary, summary_upto, suggestions, created_at, updated_at")


def thread_dict(row: sqlite3.Row) -> dict[str, Any]:
    anchor = None
    if row["anchor_message_id"] is not None:
        anchor = {"message_id": row["anchor_message_id"], "start": row["anchor_start"],
                  "end": row["anchor_end"], "text": row["anchor_text"]}
    return {"id": row["id"], "user_id": row["user_id"], "title": row["title"], "title_source": row["title_source"],
            "parent_id": row["parent_id"], "anchor": anchor,
            "summary": row["summary"], "summary_upto": row["summary_upto"],
            "generated_suggestions": json.loads(row["suggestions"]) if row["suggestions"] else [],
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


def message_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "thread_id": row["thread_id"], "role": row["role"], "content": row["content"],
            "status": row["status"], "model": row["model"],
            "usage": json.loads(row["usage"]) if row["usage"] else None,
            "finish_reason": row["finish_reason"], "error": row["error"], "created_at": row["created_at"],
            "kind": row["kind"], "merged_ids": json.loads(row["merged_ids"]) if row["merged_ids"] else None}


class Database:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.accounts = AccountStore(conn)

    @classmethod
    async def open(cls, path: Path | str) -> Database:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path)
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        db = cls(conn)
        await db._migrate()
        return db

    async def close(self) -> None:
        await self.conn.close()

    async def _migrate(self) -> None:
        (version,) = await (await self.conn.execute("PRAGMA user_version")).fetchone()
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self.conn.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """All or nothing, for the insert_* helpers (which do not commit)."""
        try:
            yield
            await self.conn.commit()
        except BaseException:
            await self.conn.rollback()
            raise

    async def insert_thread(self, user_id: int, title: str | None, summary: str | None, parent_id: int | None,
                            anchor: dict[str, Any] | None) -> int:
        anchor = anchor or {}
        stamp = now()
        cur = await self.conn.execute(
            "INSERT INTO threads (user_id, parent_id, title, title_source, summary, anchor_message_id, anchor_start,"
            " anchor_end, anchor_text, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (user_id, parent_id, title, "user" if title else None, summary, anchor.get("message_id"), anchor.get("start"),
             anchor.get("end"), anchor.get("text"), stamp, stamp))
        return cur.lastrowid

    async def insert_message(self, thread_id: int, message: dict[str, Any]) -> int:
        """A message of an imported conversation (never one answered here, which begin_turn writes)."""
        stamp = now()
        status = "interrupted" if message.get("status") == "streaming" else message.get("status", "complete")
        cur = await self.conn.execute(
            "INSERT INTO messages (thread_id, role, content, status, kind, model, usage, finish_reason,"
            " created_at, updated_at, imported) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (thread_id, message["role"], message["content"], status, message.get("kind") or "chat",
             message.get("model"), json.dumps(message["usage"]) if message.get("usage") else None,
             message.get("finish_reason"), stamp, stamp))
        return cur.lastrowid

    async def set_merged_ids(self, message_id: int, thread_ids: list[int]) -> None:
        await self.conn.execute("UPDATE messages SET merged_ids = ? WHERE id = ?", (json.dumps(thread_ids), message_id))

    async def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        return await (await self.conn.execute(sql, args)).fetchone()

    async def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return list(await (await self.conn.execute(sql, args)).fetchall())

    # threads

    async def create_thread(self, user_id: int, title: str | None, parent_id: int | None = None,
                            anchor: dict[str, Any] | None = None) -> dict[str, Any]:
        async with self.transaction():
            thread_id = await self.insert_thread(user_id, title, None, parent_id, anchor)
        return await self.get_thread(thread_id)

    async def get_thread(self, thread_id: int, user_id: int | None = None) -> dict[str, Any] | None:
        """A thread; with `user_id`, only if that user owns it (another's thread is as missing as no thread)."""
        row = await self._one(f"SELECT {THREAD_COLUMNS} FROM threads WHERE id = ? AND user_id IS COALESCE(?, user_id)",
                              thread_id, user_id)
        return thread_dict(row) if row else None

    async def thread_owners(self, thread_ids: list[int]) -> dict[int, tuple[int | None, bool]]:
        """(owner's id, whether the owner is enabled) of each of these threads that still exists."""
        if not thread_ids:
            return {}
        rows = await self._all(
            "SELECT threads.id, threads.user_id, users.disabled FROM threads LEFT JOIN users ON users.id = threads.user_id"
            f" WHERE threads.id IN ({placeholders(len(thread_ids))})", *thread_ids)
        return {row[0]: (row[1], not row[2]) for row in rows}

    async def list_threads(self, user_id: int) -> list[dict[str, Any]]:
        rows = await self._all(
            f"SELECT {THREAD_COLUMNS} FROM threads WHERE parent_id IS NULL AND user_id = ?"
            " ORDER BY updated_at DESC, id DESC", user_id)
        return [thread_dict(r) for r in rows]

    async def answer_counts(self, user_id: int, since: str) -> tuple[int, int]:
        """The user's answers streaming now, and those begun since `since` (for the per-user limits; read from
        the table, so every worker process sees the same numbers)."""
        live = await self._one(
            "SELECT count(*) AS n FROM messages m JOIN threads t ON t.id = m.thread_id"
            " WHERE t.user_id = ? AND m.role = 'assistant' AND m.status = 'streaming'", user_id)
        recent = await self._one("SELECT count(*) AS n FROM answer_starts WHERE user_id = ? AND at > ?", user_id, since)
        return live["n"], recent["n"]

    async def list_pins(self, thread_id: int) -> list[dict[str, Any]]:
        rows = await self._all(f"SELECT {THREAD_COLUMNS} FROM threads WHERE parent_id = ? ORDER BY id", thread_id)
        return [thread_dict(r) for r in rows]

    async def thread_depth(self, thread_id: int) -> int:
        """How many threads lie above this one: 0 for a conversation, 1 for its pins, 2 for theirs, ..."""
        row = await self._one(
            "WITH RECURSIVE up(parent_id, depth) AS (SELECT parent_id, 0 FROM threads WHERE id = ?"
            " UNION ALL SELECT t.parent_id, up.depth + 1 FROM threads t JOIN up ON t.id = up.parent_id)"
            " SELECT max(depth) FROM up", thread_id)
        return row[0] or 0

    async def subtree_ids(self, thread_id: int) -> list[int]:
        rows = await self._all(
            "WITH RECURSIVE tree(id) AS (SELECT ? UNION ALL SELECT t.id FROM threads t JOIN tree ON t.parent_id = tree.id)"
            " SELECT id FROM tree", thread_id)
        return [r["id"] for r in rows]

    async def delete_thread(self, thread_id: int) -> None:
        await self.conn.execute("DELETE FROM threads WHERE id = ?", (thread_id,))  # pins and messages cascade
        await self.conn.commit()

    # messages

    async def get_message(self, message_id: int) -> dict[str, Any] | None:
        row = await self._one("SELECT * FROM messages WHERE id = ?", message_id)
        return message_dict(row) if row else None

    async def messages(self, thread_id: int, up_to: int | None = None) -> list[dict[str, Any]]:
        """A thread's messages in order; with `up_to`, only those up to and including that message id."""
        rows = await self._all(
            "SELECT * FROM messages WHERE thread_id = ? AND id <= ? ORDER BY id",
            thread_id, up_to if up_to is not None else 2**62)
        return [message_dict(r) for r in rows]

    async def begin_turn(self, thread_id: int, user_text: str | None, kind: str = "chat",
                         merged_ids: list[int] | None = None) -> tuple[int | None, int]:
        """Commit the user's message (if any) and an empty `streaming` assistant row in one transaction."""
        stamp = now()
        user_id = None
        async with self.transaction():
            if user_text is not None:
                user = await self.conn.execute(
                    "INSERT INTO messages (thread_id, role, content, status, created_at, updated_at)"
                    " VALUES (?, 'user', ?, 'complete', ?, ?)", (thread_id, user_text, stamp, stamp))
                user_id = user.lastrowid
            assistant = await self.conn.execute(
                "INSERT INTO messages (thread_id, role, content, status, kind, merged_ids, created_at, updated_at)"
                " VALUES (?, 'assistant', '', 'streaming', ?, ?, ?, ?)",
                (thread_id, kind, json.dumps(merged_ids) if merged_ids else None, stamp, stamp))
            await self.conn.execute("UPDATE threads SET updated_at = ? WHERE id = ?", (stamp, thread_id))
            await self._count_start(thread_id, stamp)
        return user_id, assistant.lastrowid

    async def _count_start(self, thread_id: int, stamp: str) -> None:
        """Remember an answer begun by the thread's user (for the per-minute limit), forgetting their old ones."""
        owner = "(SELECT user_id FROM threads WHERE id = ?)"
        await self.conn.execute(f"DELETE FROM answer_starts WHERE user_id = {owner} AND at < ?",
                                (thread_id, ago(ANSWER_STARTS_KEPT)))
        await self.conn.execute("INSERT INTO answer_starts (user_id, at) SELECT user_id, ? FROM threads"
                                " WHERE id = ? AND user_id IS NOT NULL", (stamp, thread_id))

    async def set_title(self, thread_id: int, title: str, source: str, *, unless: tuple[str, ...] = ()) -> bool:
        """Set a title unless the current one came from a source in `unless` (e.g. never overwrite the user's)."""
        keep = f" AND (title_source IS NULL OR title_source NOT IN ({placeholders(len(unless))}))" if unless else ""
        cur = await self.conn.execute(
            f"UPDATE threads SET title = ?, title_source = ? WHERE id = ?{keep}", (title, source, thread_id, *unless))
        await self.conn.commit()
        return cur.rowcount == 1

    async def set_summary(self, thread_id: int, summary: str, upto: int) -> None:
        await self.conn.execute("UPDATE threads SET summary = ?, summary_upto = ? WHERE id = ?",
                                (summary, upto, thread_id))
        await self.conn.commit()

    async def set_suggestions(self, thread_id: int, suggestions: list[str]) -> None:
        await self.conn.execute("UPDATE threads SET suggestions = ? WHERE id = ?", (json.dumps(suggestions), thread_id))
        await self.conn.commit()

    async def save_answer(self, message_id: int, content: str, status: str | None = None, *,
                          model: str | None = None, usage: dict | None = None,
                          finish_reason: str | None = None, error: str | None = None) -> None:
        """Store an assistant answer's text so far; with `status`, its final state and metadata too."""
        await self.conn.execute(
            "UPDATE messages SET content = ?, status = COALESCE(?, status), model = COALESCE(?, model),"
            " usage = COALESCE(?, usage), finish_reason = COALESCE(?, finish_reason), error = COALESCE(?, error),"
            " updated_at = ? WHERE id = ?",
            (content, status, model, json.dumps(usage) if usage else None, finish_reason, error, now(), message_id))
        await self.conn.commit()

    async def recover_interrupted(self) -> int:
        """Answers left `streaming` by a crash or kill: mark them interrupted (their flushed text stays)."""
        cur = await self.conn.execute(
            "UPDATE messages SET status = 'interrupted', updated_at = ? WHERE status = 'streaming'", (now(),))
        await self.conn.commit()
        return cur.rowcount
