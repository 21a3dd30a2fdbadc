"""The account routes' request bodies: sign-in, passwords, API tokens, users (server/schemas.py holds the shared
pieces and the conversations' bodies; /api/openapi.json describes both)."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from .schemas import (MAX_PASSWORD_CHARS, MAX_TOKEN_NAME_CHARS, MAX_USERNAME_CHARS, MIN_PASSWORD_CHARS, Body, bounded,
                      code, single_line)

Password = bounded(MAX_PASSWORD_CHARS)
NewPassword = bounded(MAX_PASSWORD_CHARS, min_length=MIN_PASSWORD_CHARS)


def _plain_name(value: str) -> str:
    """A user name as people read it: NFKC (a fullwidth ａ is an a), with no invisible formatting character
    (zero-width space, bidi override) that would make two names look alike or a name read backwards."""
    value = unicodedata.normalize("NFKC", value)
    if any(unicodedata.category(c) == "Cf" for c in value):
        raise PydanticCustomError("invisible_character", "must not hold invisible formatting characters")
    return value


Username = Annotated[single_line(MAX_USERNAME_CHARS), AfterValidator(_plain_name)]


class Login(Body):
    username: Username
    password: Annotated[Password, Field(min_length=1)]


class ChangePassword(Body):
    current_password: Password | None = Field(None, description="null only while the account has no password")
    new_password: NewPassword = Field(json_schema_extra=code("weak_password"))


class CreateToken(Body):
    name: single_line(MAX_TOKEN_NAME_CHARS)


class CreateUser(Body):
    username: Username
    password: NewPassword = Field(json_schema_extra=code("weak_password"))
    is_admin: bool = Field(False, strict=True)


class PatchUser(Body):
    disabled: bool | None = Field(None, strict=True)
    is_admin: bool | None = Field(None, strict=True)
    password: NewPassword | None = Field(None, json_schema_extra=code("weak_password"))
