"""Timestamps as stored: UTC ISO-8601 text with milliseconds, which sorts and compares as text in SQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


def now(offset_seconds: float = 0.0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=offset_seconds)).isoformat(timespec="milliseconds")


def ago(seconds: float) -> str:
    return now(-seconds)


def later(seconds: float) -> str:
    return now(seconds)
