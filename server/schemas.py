"""Every input and output of the HTTP API, described once with pydantic: the routes validate with these models,
the error messages come from them, and `server.openapi` turns them into the OpenAPI document.

Request bodies forbid unknown fields (`extra="forbid"`): a misspelt `parent_id` must not quietly create a top-level
thread, and the document can say `additionalProperties: false` so a client learns its mistake from a 422. The
import document is the one exception: it ignores unknown keys, so an export from a newer server still imports (its
`version` is what says whether it can be read).

Bad input answers 400 (`invalid_json`: not JSON, not UTF-8, nested too deep, not an object) or 422 with a code:
the field's own (`x-error-code` in the schema, e.g. `invalid_message`), else the model's, else `invalid_field`.
The response models live in `server.openapi`, beside the document they describe.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from aiohttp import web
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError,
                      model_validator)
from pydantic_core import PydanticCustomError

from .errors import ApiError
from .merge import FORMATS, MAX_INSTRUCTION_CHARS

MAX_ID = 2**63 - 1  # SQLite's INTEGER range: a larger id can name nothing (and would overflow the driver)
MAX_PIN_DEPTH = 25  # a pin of a pin of ...: POST /api/threads refuses a 26th level, and so does an import
USAGE_NESTING = 8  # levels inside a message's `usage` (the provider's JSON: two or three in practice)
# Nesting of a JSON body, derived so that every export imports back: an export of a chain at MAX_PIN_DEPTH is the
# document (1), the root thread (2), then two levels per pin (its parent's `pins` list and the pin), and in the
# deepest pin its `messages` list, a message and that message's `usage` object (3) with what the usage holds.
MAX_DEPTH = 2 + 2 * MAX_PIN_DEPTH + 3 + USAGE_NESTING
MAX_TITLE_CHARS = 200
MAX_USERNAME_CHARS = 64
MAX_PASSWORD_CHARS = 1024
MIN_PASSWORD_CHARS = 8
MAX_TOKEN_NAME_CHARS = 100
MAX_MERGED_THREADS = 1000
MAX_TEXT_CHARS = 2_000_000  # any one string of an import (the body limit, --max-body-bytes, comes first anyway)

_OWN_CODES = frozenset({"invalid_anchor", "invalid_pin", "invalid_instruction"})
_SURROGATE = re.compile("[\ud800-\udfff]")
CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")
_DIGITS = re.compile("[0-9]{1,19}")


def code(name: str) -> dict[str, Any]:
    """`json_schema_extra` naming the error code a field (or a model) answers with."""
    return {"x-error-code": name}


def _no_surrogates(value: Any) -> Any:
    """Before the type check, so that the message says what is wrong (pydantic's own is about parsing)."""
    if isinstance(value, str) and _SURROGATE.search(value):
        raise PydanticCustomError("lone_surrogate", "must be valid Unicode text (it holds a lone surrogate, "
                                                    "U+D800..U+DFFF, which no UTF-8 text can carry)")
    return value


def _clean_json(value: Any) -> Any:
    """A free-form JSON value (a message's `usage`): no lone surrogate in any string of it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            _no_surrogates(item)
    return value


def _exact_int(value: Any) -> Any:
    if isinstance(value, (bool, float)):
        raise PydanticCustomError("int_type", "should be an integer")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be empty or only spaces")
    return value


# Strict: JSON true is not 1 and "5" is not 5. Every string goes through _no_surrogates: SQLite, the SSE stream and
# the model provider all encode text as UTF-8, and a lone surrogate (JSON "\ud800") cannot be encoded.
Id = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]
Offset = Annotated[int, Field(strict=True, ge=0, le=MAX_ID)]
NonBlank = Annotated[str, Field(strict=True), BeforeValidator(_no_surrogates), AfterValidator(_not_blank)]


def bounded(max_length: int, min_length: int = 0) -> Any:
    return Annotated[str, StringConstraints(strict=True, min_length=min_length, max_length=max_length),
                     BeforeValidator(_no_surrogates)]


def _one_line(value: str) -> str:
    if CONTROL_CHARACTER.search(value):
        raise PydanticCustomError("control_character", "must be one line of text, without control characters")
    return value


def single_line(max_length: int, min_length: int = 1) -> Any:
    """A name shown on one line (a user name, a title, a token's name): spaces around it are dropped before the
    length is checked, so "  " is no name."""
    return Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=min_length,
                                            max_length=max_length),
                     BeforeValidator(_no_surrogates), AfterValidator(_one_line)]


def choice(*values: str) -> Any:
    """One of these strings (an enum in the schema)."""
    return Annotated[Literal[values], BeforeValidator(_no_surrogates)]


def path_id(value: str) -> int | None:
    """An id from a URL path (`/api/threads/{id}`), or None (the route answers 404) for anything that is not a plain
    decimal number in 1..2**63-1: `int()` alone would take " 7", "+7", "7_0" and "٧", and overflow SQLite."""
    if not _DIGITS.fullmatch(value):
        return None
    number = int(value)
    return number if 1 <= number <= MAX_ID else None


class Body(BaseModel):
    """A JSON request body: unknown fields are refused; the default error code is `invalid_field`."""

    model_config = ConfigDict(extra="forbid")
    error_code: ClassVar[str] = "invalid_field"


class Query(BaseModel):
    """Query parameters: unknown ones are ignored (caches and tools add their own)."""

    model_config = ConfigDict(extra="ignore")
    error_code: ClassVar[str] = "invalid_field"


# --- conversations -------------------------------------------------------------------------------------------

def _passage(anchor: Any) -> Any:
    if anchor.start >= anchor.end:
        raise PydanticCustomError("invalid_anchor", "needs start < end (a passage of one character or more)")
    return anchor


class AnchorIn(Body):
    message_id: Id = Field(description="an assistant message of the parent thread")
    start: Offset = Field(description="first character of the passage")
    end: Offset = Field(description="one past its last character")

    @model_validator(mode="after")
    def _span(self) -> AnchorIn:
        return _passage(self)


class CreateThread(Body):
    """A new thread; with `parent_id` and `anchor`, a pin on the passage [start, end) of a parent's answer."""

    title: single_line(MAX_TITLE_CHARS, min_length=0) | None = Field(None, description="blank: the automatic title")
    parent_id: Id | None = None
    anchor: AnchorIn | None = Field(None, json_schema_extra=code("invalid_anchor"))

    @model_validator(mode="after")
    def _pin(self) -> CreateThread:
        if (self.parent_id is None) != (self.anchor is None):
            raise PydanticCustomError("invalid_pin", "A pin needs both `parent_id` and `anchor`.")
        return self


class Chat(Body):
    message: NonBlank = Field(json_schema_extra=code("invalid_message"),
                              description="the user's message (at most --max-message-chars characters, else 413)")


class Merge(Body):
    format: choice(*FORMATS) = Field(json_schema_extra=code("invalid_format"))
    instruction: bounded(MAX_INSTRUCTION_CHARS) | None = Field(
        None, json_schema_extra=code("invalid_instruction"), description="required by the `custom` format")
    threads: list[Id] = Field(min_length=1, max_length=MAX_MERGED_THREADS, json_schema_extra=code("invalid_threads"),
                              description="ids of threads of this conversation's tree")

    @model_validator(mode="after")
    def _custom(self) -> Merge:
        if self.format == "custom" and not (self.instruction or "").strip():
            raise PydanticCustomError("invalid_instruction", "The custom format needs an `instruction`.")
        return self


class ExportQuery(Query):
    format: choice("md", "json") = Field("md", json_schema_extra=code("invalid_format"))


class FollowQuery(Query):
    after: bounded(40) | None = Field(None, description="an event id `<message id>.<n>` (as Last-Event-ID)")


# The export document (GET .../export?format=json), which POST /api/import takes back.

class ExportPart(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ExportAnchor(ExportPart):
    message_id: Id
    start: Offset
    end: Offset
    text: bounded(MAX_TEXT_CHARS) = Field(description="the message's characters [start, end)")

    @model_validator(mode="after")
    def _span(self) -> ExportAnchor:
        return _passage(self)


class ExportMessage(ExportPart):
    id: Id
    role: choice("user", "assistant")
    content: bounded(MAX_TEXT_CHARS)
    status: choice("complete", "interrupted", "error", "streaming") = "complete"
    kind: choice("chat", "merge") = "chat"
    merged_ids: list[Id] | None = Field(None, max_length=MAX_MERGED_THREADS)
    model: bounded(1000) | None = None
    usage: Annotated[dict[bounded(100), Any], AfterValidator(_clean_json)] | None = Field(None, max_length=100)
    finish_reason: bounded(100) | None = None


def one_line_title(title: str | None) -> str | None:
    """A stored title as POST /api/threads takes one. Titles from before that rule, a plain title cut from a first
    message holding a control character, or a model's holding a tab may not be one line: exports and imports
    flatten them, so every export imports."""
    flat = " ".join(CONTROL_CHARACTER.sub(" ", title or "").split())[:MAX_TITLE_CHARS].rstrip()
    return flat or None


def _flat_title(value: Any) -> Any:
    return one_line_title(value) if isinstance(value, str) else value


class ExportThread(ExportPart):
    id: Id | None = None
    title: Annotated[single_line(MAX_TITLE_CHARS, min_length=0) | None, BeforeValidator(_flat_title)] = Field(
        None, description="made one line (an export from a server before that rule still imports); blank: no title")
    summary: bounded(MAX_TEXT_CHARS) | None = None
    anchor: ExportAnchor | None = Field(None, description="a pin's passage, on an assistant message of its parent")
    messages: list[ExportMessage]
    pins: list[ExportThread] = []


class ExportDocument(ExportPart):
    """A conversation tree as exported; imported back as a new, equal tree (new ids). Only a tree the API could
    have built imports: each pin on a passage of an assistant message of its parent (`text` that message's
    characters [start, end)), message ids unique, pins no deeper than POST /api/threads allows (else 422)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=code("invalid_export"))
    error_code: ClassVar[str] = "invalid_export"
    format: choice("pinchat-export")
    version: Annotated[Literal[1], BeforeValidator(_exact_int)]
    thread: ExportThread

    @model_validator(mode="after")
    def _buildable(self) -> ExportDocument:
        # Message ids unique in the whole document, not only per thread: an anchor names its message by id, and
        # the import maps old ids to new ones in one table.
        seen_ids: set[int] = set()
        thread_ids: set[int] = set()  # a merge names its threads by id: one id, one thread
        stack = [(self.thread, "thread", 0)]
        while stack:
            thread, where, depth = stack.pop()
            if thread.id is not None:
                if thread.id in thread_ids:
                    raise PydanticCustomError("duplicate_id", f"`{where}.id` {thread.id} is used twice; thread ids "
                                                              "are unique in an export.")
                thread_ids.add(thread.id)
            if depth > MAX_PIN_DEPTH:
                raise PydanticCustomError("invalid_pin", f"`{where}` is a pin {depth} levels deep; pins nest at most "
                                                         f"{MAX_PIN_DEPTH} levels.")
            for i, message in enumerate(thread.messages):
                if message.id in seen_ids:
                    raise PydanticCustomError("duplicate_id", f"`{where}.messages[{i}].id` {message.id} is used "
                                                              "twice; message ids are unique in an export.")
                seen_ids.add(message.id)
            answers = {m.id: m.content for m in thread.messages if m.role == "assistant"}
            for i, pin in enumerate(thread.pins):
                _check_pin_anchor(pin.anchor, answers, f"{where}.pins[{i}].anchor")
                stack.append((pin, f"{where}.pins[{i}]", depth + 1))
        return self


def _check_pin_anchor(anchor: ExportAnchor | None, answers: dict[int, str], where: str) -> None:
    """As POST /api/threads checks a new pin's anchor. That route stores the message's own [start, end) as the
    `text`; an import whose `text` differs is refused rather than re-sliced, since it would quote other words."""
    if anchor is None:
        raise PydanticCustomError("invalid_pin", f"`{where}` is required: a pin hangs from a passage of its parent.")
    content = answers.get(anchor.message_id)
    if content is None:
        raise PydanticCustomError("invalid_anchor", f"`{where}` must point at an assistant message of the parent "
                                                    "thread.")
    if anchor.end > len(content):
        raise PydanticCustomError("invalid_anchor", f"`{where}` [{anchor.start}, {anchor.end}) must lie inside the "
                                                    f"message (0..{len(content)}).")
    if anchor.text != content[anchor.start:anchor.end]:
        raise PydanticCustomError("invalid_anchor", f"`{where}.text` must be the message's characters "
                                                    f"[{anchor.start}, {anchor.end}).")


# --- reading requests ------------------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def decode_json(raw: bytes) -> dict[str, Any]:
    """The JSON object in a request body, or ApiError 400 `invalid_json` saying what is wrong with it."""
    if not raw.strip():
        raise ApiError(400, "invalid_json", "The request body is empty; send a JSON object (`{}` at least).")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "The request body is not UTF-8 text.") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", f"The JSON nests deeper than {MAX_DEPTH} levels.") from None
    except ValueError:  # JSONDecodeError, NaN/Infinity, an integer of more than 4300 digits
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    if _too_deep(value):
        raise ApiError(400, "invalid_json", f"The JSON nests deeper than {MAX_DEPTH} levels.")
    return value


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _error_code(model: type[BaseModel], error: Any) -> str:
    kind = error["type"]
    if kind in _OWN_CODES:  # our own model validators name their code
        return kind
    loc = error["loc"]
    if loc and isinstance(loc[0], str) and loc[0] in model.model_fields:
        extra = model.model_fields[loc[0]].json_schema_extra
        if isinstance(extra, dict) and "x-error-code" in extra:
            return str(extra["x-error-code"])
    return getattr(model, "error_code", "invalid_field")


def _message(error: Any) -> str:
    where, kind = _where(error["loc"]), error["type"]
    if kind == "missing":
        return f"`{where}` is required."
    if kind == "extra_forbidden":
        return f"`{where}` is not a field of this request."
    text_ = re.sub(r"^(Input|String|List|Dictionary|Value) should", "should", error["msg"])
    text_ = re.sub(r"a valid dictionary( or instance of \w+)?", "a JSON object", text_)
    text_ = text_ if text_.endswith(".") else text_ + "."
    return f"`{where}` {text_}" if where else text_[0].upper() + text_[1:]


def invalid(model: type[BaseModel], exc: ValidationError) -> ApiError:
    """The 422 for a failed validation: the first error's code and a message naming the field."""
    first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    return ApiError(422, _error_code(model, first), _message(first))


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(model, exc) from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Read, decode and validate a JSON body; ApiError 400 `invalid_json` or 422 with the field's code."""
    return validate(model, decode_json(await request.read()))


def parse_query(request: web.Request, model: type[M]) -> M:
    """Validate the query string (the last value of a repeated parameter wins)."""
    return validate(model, {key: request.query.getall(key)[-1] for key in request.query})
