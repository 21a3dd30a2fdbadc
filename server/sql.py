"""Pieces of SQL text shared by the stores (db.py, account_store.py), so a second database's parameter style
(PostgreSQL's `$1`) changes here only."""

from __future__ import annotations


def placeholders(count: int) -> str:
    """`?, ?, ?` for an `IN (...)` list of `count` values (at least one: `IN ()` is not SQL)."""
    if count < 1:
        raise ValueError("an IN list needs at least one value")
    return ", ".join("?" * count)
