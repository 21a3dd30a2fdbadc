"""Secrets: passwords hashed with Argon2id, and the random secrets of sessions, API tokens and sign-in links.

Session secrets and API tokens are random 256-bit strings stored as SHA-256 hashes: unlike passwords they cannot be
guessed, so a slow hash would only cost every request. Imports nothing heavy: the command line uses it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .account_store import AccountStore

TOKEN_PREFIX = "pc_"
LOGIN_LINK_TTL = 3600.0  # seconds a printed sign-in URL stays valid (it works once)

_hasher = PasswordHasher()  # argon2-cffi's defaults are Argon2id with RFC 9106's low-memory profile


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)  # ~50 ms of CPU: off the event loop


async def verify_password(stored: str | None, password: str) -> bool:
    if stored is None:
        # Same work as a real check, so timing does not tell which names exist or have a password.
        await asyncio.to_thread(_hasher.hash, password)
        return False
    try:
        return await asyncio.to_thread(_hasher.verify, stored, password)
    except (VerificationError, InvalidHashError):
        return False


async def login_link(accounts: AccountStore, user_id: int, base_url: str) -> str:
    """A fresh one-time sign-in URL for the user."""
    secret = new_secret()
    await accounts.create_login_link(user_id, secret_hash(secret), LOGIN_LINK_TTL)
    return f"{base_url}?token={secret}"
