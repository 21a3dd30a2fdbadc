"""The per-thread client store. Pure Python (runs under CPython for the tests, under Pyodide in the page).

`Store.threads` is a dict keyed by thread id. Each `ThreadState` holds what the server said about the thread
(`info`: title, parent, anchor...), its `messages`, its `pins`, and the live stream: `streaming`, the streaming
buffer `parts` (a list of token texts, joined on demand: `+=` on a growing str is quadratic), `error` and
`interrupted`. Every mutation names one thread and only touches that thread's state; only that thread's
subscribers are notified. The sidebar's list of top-level threads has its own subscribers.

Callbacks are called as `callback(thread_id, kind)` (`kind` says what changed: "load", "send", "start", "tokens",
"end", "error", "pins", "info") and must not raise; the view only marks the thread dirty and renders on the next
animation frame, reading the state itself. `subscribe_any` callbacks hear of every thread (but not of tokens):
the conversation tree redraws from them.

A merge streams like an answer, into a state of its own keyed by a merge key (a string, see contract.py):
`begin_merge()`, then the same `on_start` / `append_tokens` / `finish` as a chat. `begin_follow()` makes an answer
loaded from the server while it was being written the streaming one (a reload or a second tab follows it);
`set_reconnecting()` marks a broken stream that is being followed again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Message", "ThreadState", "Store", "FINAL_STATUSES"]

FINAL_STATUSES = ("complete", "interrupted", "error")
_keys = itertools.count(1)

Callback = Callable[[int, str], None]


def _new_key() -> str:
    return f"k{next(_keys)}"


@dataclass(eq=False)
class Message:
    """One message. `key` is client-side and never changes (a message sent from this page exists before the
    server gives it an `id`); `id` is the server's id, `None` until the stream's `start` event."""

    role: str
    content: str = ""
    status: str = "complete"
    id: int | None = None
    model: str | None = None
    usage: dict | None = None
    created_at: str | None = None
    error: dict | None = None  # {"code", "message"} when this message failed
    finish_reason: str | None = None  # the model's: "length" means the answer was cut at the token limit
    parts: list[str] | None = None  # the streaming buffer while this message streams
    kind: str = "chat"  # "chat" | "merge" (a merged write-up of `merged_ids`)
    merged_ids: list[int] | None = None
    key: str = field(default_factory=_new_key)

    @classmethod
    def from_api(cls, data: dict) -> Message:
        error = data.get("error")
        if isinstance(error, str) and error:
            error = {"code": "error", "message": error}
        return cls(
            error=error if isinstance(error, dict) else None,
            role=data["role"],
            content=data.get("content") or "",
            status=data.get("status") or "complete",
            id=data.get("id"),
            model=data.get("model"),
            usage=data.get("usage"),
            created_at=data.get("created_at"),
            finish_reason=data.get("finish_reason"),
            kind=data.get("kind") or "chat",
            merged_ids=list(data.get("merged_ids") or []) or None,
        )

    @property
    def cut_off(self) -> bool:
        """A complete answer that stopped at the model's token limit, not where the model meant to end."""
        return self.status == "complete" and self.finish_reason == "length"

    @property
    def text(self) -> str:
        """The text so far: the joined buffer while streaming, else the content."""
        if self.parts is not None:
            return "".join(self.parts)
        return self.content


@dataclass(eq=False)
class ThreadState:
    thread_id: int
    info: dict = field(default_factory=dict)  # the server's thread object, without messages / pins
    messages: list[Message] = field(default_factory=list)
    pins: list[dict] = field(default_factory=list)  # direct pins: thread objects with an anchor
    loaded: bool = False  # messages fetched from the server at least once
    streaming: bool = False  # a stream of this page is running for this thread
    stopping: bool = False  # Stop pressed, waiting for the stream to end
    reconnecting: bool = False  # the stream broke and is being followed again
    error: dict | None = None  # the last failure shown for this thread: {"code", "message"}
    interrupted: bool = False  # the last stream was stopped
    parts: list[str] = field(default_factory=list)  # the streaming buffer of the current answer
    streaming_message: Message | None = None

    @property
    def buffer(self) -> str:
        return "".join(self.parts)

    @property
    def title(self) -> str | None:
        return self.info.get("title")

    @property
    def parent_id(self) -> int | None:
        return self.info.get("parent_id")

    @property
    def anchor(self) -> dict | None:
        return self.info.get("anchor")

    def message_by_id(self, message_id: int) -> Message | None:
        for message in self.messages:
            if message.id == message_id:
                return message
        return None


class Store:
    def __init__(self) -> None:
        self.threads: dict[int, ThreadState] = {}
        self.thread_list: list[dict] = []  # top-level threads, newest first, as the server lists them
        self._subscribers: dict[int, list[Callback]] = {}
        self._list_subscribers: list[Callable[[], None]] = []
        self._any_subscribers: list[Callback] = []  # told about every thread (the tree), except "tokens"

    # ---- subscriptions ----------------------------------------------------------------------------------------

    def subscribe(self, thread_id: int, callback: Callback) -> None:
        subs = self._subscribers.setdefault(thread_id, [])
        if callback not in subs:
            subs.append(callback)

    def unsubscribe(self, thread_id: int, callback: Callback) -> None:
        subs = self._subscribers.get(thread_id)
        if subs and callback in subs:
            subs.remove(callback)
            if not subs:
                del self._subscribers[thread_id]

    def subscribers(self, thread_id: int) -> list[Callback]:
        return list(self._subscribers.get(thread_id, ()))

    def subscribe_list(self, callback: Callable[[], None]) -> None:
        if callback not in self._list_subscribers:
            self._list_subscribers.append(callback)

    def unsubscribe_list(self, callback: Callable[[], None]) -> None:
        if callback in self._list_subscribers:
            self._list_subscribers.remove(callback)

    def subscribe_any(self, callback: Callback) -> None:
        """`callback(thread_id, kind)` for a change of any thread, tokens excepted (they change no structure)."""
        if callback not in self._any_subscribers:
            self._any_subscribers.append(callback)

    def unsubscribe_any(self, callback: Callback) -> None:
        if callback in self._any_subscribers:
            self._any_subscribers.remove(callback)

    def _notify(self, thread_id: int, kind: str) -> None:
        for callback in self.subscribers(thread_id):
            callback(thread_id, kind)
        if kind != "tokens":
            for callback in list(self._any_subscribers):
                callback(thread_id, kind)

    def _notify_list(self) -> None:
        for callback in list(self._list_subscribers):
            callback()

    # ---- reads ------------------------------------------------------------------------------------------------

    def get(self, thread_id: int) -> ThreadState | None:
        return self.threads.get(thread_id)

    def thread(self, thread_id: int) -> ThreadState:
        """The state of `thread_id`, created empty if this is the first time we hear of it."""
        state = self.threads.get(thread_id)
        if state is None:
            state = self.threads[thread_id] = ThreadState(thread_id)
        return state

    def streaming_ids(self) -> list[int]:
        return [tid for tid, state in self.threads.items() if state.streaming]

    # ---- server snapshots -------------------------------------------------------------------------------------

    def set_thread_list(self, threads: list[dict]) -> None:
        self.thread_list = list(threads)
        self._notify_list()

    def upsert_listed_thread(self, info: dict) -> None:
        """Put a top-level thread (new, or renamed) at its place in the sidebar list."""
        if info.get("parent_id") is not None:
            return
        rest = [t for t in self.thread_list if t.get("id") != info.get("id")]
        self.thread_list = [info, *rest]
        self._notify_list()

    def remove_thread(self, thread_id: int) -> None:
        """The thread is gone on the server: forget it, its pins (and theirs) and its place in the parent."""
        gone = self.subtree_ids(thread_id)
        state = self.threads.get(thread_id)
        parent = self.threads.get(state.parent_id) if state is not None and state.parent_id is not None else None
        for tid in gone:
            self.threads.pop(tid, None)
        self.thread_list = [t for t in self.thread_list if t.get("id") != thread_id]
        self._notify_list()
        if parent is not None:
            parent.pins = [p for p in parent.pins if p.get("id") != thread_id]
            self._notify(parent.thread_id, "pins")
        for tid in gone:
            self._notify(tid, "load")

    def subtree_ids(self, thread_id: int) -> list[int]:
        """`thread_id` and every pin below it that the store knows of, parents first."""
        out, todo, seen = [], [thread_id], set()
        while todo:
            tid = todo.pop(0)
            if tid in seen:
                continue
            seen.add(tid)
            out.append(tid)
            state = self.threads.get(tid)
            if state is not None:
                todo.extend(p["id"] for p in state.pins if p.get("id") is not None)
        return out

    def set_info(self, info: dict) -> None:
        state = self.thread(info["id"])
        state.info = {k: v for k, v in info.items() if k not in ("messages", "pins")}
        self._notify(state.thread_id, "info")

    def load_thread(self, detail: dict, *, messages: bool = True) -> None:
        """Take the server's `GET /api/threads/{id}` answer. While this page streams into the thread, its local
        messages are newer than the server's snapshot: only the info and pins are taken then (and always with
        `messages=False`, unless nothing was loaded yet). A message the page already shows keeps its key, so the
        view keeps its element."""
        state = self.thread(detail["id"])
        state.info = {k: v for k, v in detail.items() if k not in ("messages", "pins")}
        state.pins = list(detail.get("pins") or [])
        if not state.streaming and (messages or not state.loaded):
            keys = {m.id: m.key for m in state.messages if m.id is not None}
            fresh = []
            for data in detail.get("messages") or []:
                message = Message.from_api(data)
                if message.id in keys:
                    message.key = keys[message.id]
                fresh.append(message)
            state.messages = fresh
            state.loaded = True
        self._notify(state.thread_id, "load")

    def add_pin(self, parent_id: int, pin: dict) -> None:
        state = self.thread(parent_id)
        state.pins = [p for p in state.pins if p.get("id") != pin.get("id")] + [pin]
        self._notify(parent_id, "pins")
        pin_state = self.thread(pin["id"])
        if not pin_state.info:
            pin_state.info = dict(pin)
            pin_state.loaded = True  # a pin we just created has no messages yet

    # ---- the life of one answer -------------------------------------------------------------------------------

    def begin_send(self, thread_id: int, text: str) -> Message:
        """The user sent `text`: show it and an empty assistant answer at once, before the server answers."""
        state = self.thread(thread_id)
        if state.streaming:
            raise RuntimeError(f"thread {thread_id} is already streaming")
        state.messages.append(Message(role="user", content=text, status="complete"))
        answer = Message(role="assistant", status="streaming", parts=[])
        state.messages.append(answer)
        return self._begin_answer(thread_id, state, answer)

    def begin_merge(self, key, merged_ids: list[int] | None = None) -> Message:
        """A merge starts streaming into `key` (a state of its own, not a thread): only an answer, no question;
        the previous merge shown there goes."""
        state = self.thread(key)
        if state.streaming:
            raise RuntimeError(f"{key} is already streaming")
        answer = Message(role="assistant", status="streaming", parts=[], kind="merge",
                         merged_ids=list(merged_ids) if merged_ids else None)
        state.messages = [answer]
        state.loaded = True
        return self._begin_answer(key, state, answer)

    def begin_follow(self, key, message_id: int) -> Message | None:
        """Follow an answer the server is writing (a reload, another tab): its message, loaded from the server's
        snapshot with the text so far, becomes the streaming answer. None when it is not shown as streaming."""
        state = self.thread(key)
        answer = state.message_by_id(message_id)
        if state.streaming or answer is None or answer.status != "streaming":
            return None
        answer.parts = [answer.content] if answer.content else []
        answer.content = ""
        return self._begin_answer(key, state, answer)

    def _begin_answer(self, key, state: ThreadState, answer: Message) -> Message:
        """`answer` (already in `state.messages`) becomes the streaming answer of `key`."""
        state.streaming = True
        state.stopping = False
        state.reconnecting = False
        state.error = None
        state.interrupted = False
        state.parts = answer.parts
        state.streaming_message = answer
        self._notify(key, "send")
        return answer

    def on_start(self, thread_id: int, user_message_id: int | None, message_id: int | None) -> None:
        state = self.thread(thread_id)
        answer = state.streaming_message
        if answer is None:
            return
        answer.id = message_id
        for message in reversed(state.messages[:-1]):
            if message.role == "user":
                if message.id is None:
                    message.id = user_message_id
                break
        self._notify(thread_id, "start")

    def append_tokens(self, thread_id: int, texts: list[str]) -> None:
        """Tokens arrived (all tokens of one network chunk at once: one notification per chunk)."""
        state = self.thread(thread_id)
        if state.streaming_message is None or not texts:
            return
        state.parts.extend(texts)
        self._notify(thread_id, "tokens")

    def finish(self, thread_id: int, status: str = "complete", *, message_id: int | None = None,
               usage: dict | None = None, error: dict | None = None, text: str | None = None,
               finish_reason: str | None = None) -> None:
        """The stream ended: `status` is "complete", "interrupted" or "error". The partial answer is kept, or
        replaced by `text` (the server's saved version, which may hold tokens that were still in flight)."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"not a final status: {status!r}")
        state = self.thread(thread_id)
        answer = state.streaming_message
        if answer is not None:
            answer.content = "".join(answer.parts or ()) if text is None else text
            answer.parts = None
            answer.status = status
            if message_id is not None and answer.id is None:
                answer.id = message_id
            if usage is not None:
                answer.usage = usage
            answer.finish_reason = finish_reason
            if error is not None:
                answer.error = error
        state.streaming = False
        state.stopping = False
        state.reconnecting = False
        state.streaming_message = None
        if state.info.get("streaming"):
            state.info["streaming"] = False  # our snapshot was taken while it streamed
        state.interrupted = status == "interrupted"
        state.error = error if status == "error" else None
        self._notify(thread_id, "end")

    def refused_question(self, thread_id: int) -> str | None:
        """The text of the thread's last message when it is a question the server did not take (fail_before_start)."""
        state = self.get(thread_id)
        last = state.messages[-1] if state is not None and state.messages else None
        if last is not None and last.role == "user" and last.id is None and last.status == "error":
            return last.content
        return None

    def fail_before_start(self, thread_id: int, error: dict) -> None:
        """The server refused the message (e.g. 409 busy) or could not be reached: nothing was saved. The
        user's message stays, marked as not sent, and the empty answer goes."""
        state = self.thread(thread_id)
        answer = state.streaming_message
        if answer is not None and answer in state.messages and answer.id is None and not answer.parts:
            state.messages.remove(answer)
            for message in reversed(state.messages):
                if message.role == "user":
                    if message.id is None:
                        message.status = "error"
                        message.error = error
                    break
            state.streaming = False
            state.stopping = False
            state.reconnecting = False
            state.streaming_message = None
            state.interrupted = False
            state.error = error
            self._notify(thread_id, "error")
        else:
            self.finish(thread_id, "error", error=error)

    def set_stopping(self, thread_id: int) -> None:
        state = self.thread(thread_id)
        if state.streaming and not state.stopping:
            state.stopping = True
            self._notify(thread_id, "info")

    def set_reconnecting(self, thread_id: int, reconnecting: bool) -> None:
        state = self.thread(thread_id)
        if state.streaming and state.reconnecting != reconnecting:
            state.reconnecting = reconnecting
            self._notify(thread_id, "info")

    def set_error(self, thread_id: int, error: dict | None) -> None:
        """Show (or clear, with None) an error about this thread that is not about one answer."""
        state = self.thread(thread_id)
        state.error = error
        self._notify(thread_id, "error")
