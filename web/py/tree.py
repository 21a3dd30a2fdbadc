"""The conversation tree, computed from the store. Pure Python (CPython tests, Pyodide in the page).

A conversation is a main thread and its pins, nested: `build()` gives the tree of `TreeNode`s in tree order (a
thread's pins ordered by where they are anchored: the anchored message's place, then the offset), `path()` the
chain from the main thread down to a pin (the breadcrumb), `label()` the title to show for a thread, and
`preview()` the first lines of a pin's first answer (the hover card on an anchor).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from store import Store

__all__ = ["TreeNode", "build", "walk", "path", "label", "passage", "show_passages_rendered", "preview", "signature",
           "MAX_DEPTH"]

MAX_DEPTH = 32  # a guard against a cycle in broken data, far beyond any real nesting
LABEL_CHARS = 60
_passage_text = None  # markdown_render.passage_text, once the renderer is in (renderer_install.py)


def show_passages_rendered(passage_text) -> None:
    global _passage_text
    _passage_text = passage_text


@dataclass
class TreeNode:
    thread_id: int
    depth: int
    title: str
    streaming: bool
    parent_id: int | None = None
    children: list[TreeNode] = field(default_factory=list)


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text[:limit].rstrip() + "…" if len(text) > limit else text


def _entry(store: Store, thread_id: int) -> dict:
    """What the store knows about a thread: its own info, else its entry in its parent's pins or the list."""
    state = store.get(thread_id)
    if state is not None and state.info:
        return state.info
    for other in store.threads.values():
        for pin in other.pins:
            if pin.get("id") == thread_id:
                return pin
    for listed in store.thread_list:
        if listed.get("id") == thread_id:
            return listed
    return {}


def label(store: Store, thread_id: int) -> str:
    """A thread's title; before it has one, its first question (a pin: its passage), else a placeholder."""
    info = _entry(store, thread_id)
    listed = next((t for t in store.thread_list if t.get("id") == thread_id), None)
    title = (listed or {}).get("title") or info.get("title")
    if title:
        return str(title)
    state = store.get(thread_id)
    if state is not None:
        for message in state.messages:
            if message.role == "user" and message.content.strip():
                return _short(message.content, LABEL_CHARS)
    anchor = info.get("anchor") or {}
    quote = passage(store, info)
    if quote:
        return f"“{_short(quote, LABEL_CHARS - 2)}”"
    if info.get("parent_id") is not None or anchor:
        return f"Pin #{thread_id}"
    return f"New thread #{thread_id}"


def passage(store: Store, info: dict) -> str:
    """A pin's passage as the reader saw it: the rendered text at the anchor in its parent's answer (a selection
    across `**bold**` or table cells shows no `**` or `|`). Its source characters, `anchor.text`, while the
    renderer or the parent's answer is not loaded here."""
    anchor = info.get("anchor") or {}
    text = str(anchor.get("text") or "")
    parent = store.get(info["parent_id"]) if text and info.get("parent_id") is not None else None
    message = parent.message_by_id(anchor.get("message_id")) if parent is not None else None
    start, end = anchor.get("start"), anchor.get("end")
    if _passage_text is None or message is None or message.content[start:end] != text:
        return text
    return _passage_text(message.content, start, end) or text


def is_streaming(store: Store, thread_id: int, busy: set | frozenset = frozenset()) -> bool:
    """Streaming from this page (or a merge into it: `busy`), or, as far as the last snapshot says, elsewhere."""
    if thread_id in busy:
        return True
    state = store.get(thread_id)
    if state is not None and state.streaming:
        return True
    return bool(_entry(store, thread_id).get("streaming"))


def _ordered_pins(store: Store, thread_id: int) -> list[dict]:
    state = store.get(thread_id)
    if state is None:
        return []
    order = {m.id: i for i, m in enumerate(state.messages) if m.id is not None}

    def key(pin: dict):
        anchor = pin.get("anchor") or {}
        return (order.get(anchor.get("message_id"), len(order)), anchor.get("message_id") or 0,
                anchor.get("start") or 0, pin.get("id") or 0)

    return sorted((p for p in state.pins if p.get("id") is not None), key=key)


def build(store: Store, root_id: int, busy: set | frozenset = frozenset()) -> TreeNode:
    """The tree under `root_id` as far as the store knows it."""
    seen: set[int] = set()

    def make(thread_id: int, depth: int, parent_id: int | None) -> TreeNode:
        seen.add(thread_id)
        node = TreeNode(thread_id, depth, label(store, thread_id), is_streaming(store, thread_id, busy), parent_id)
        if depth < MAX_DEPTH:
            for pin in _ordered_pins(store, thread_id):
                if pin["id"] not in seen:
                    node.children.append(make(pin["id"], depth + 1, thread_id))
        return node

    return make(root_id, 0, None)


def walk(node: TreeNode) -> Iterator[TreeNode]:
    """The nodes in tree order (a thread, then its pins and theirs)."""
    yield node
    for child in node.children:
        yield from walk(child)


def signature(node: TreeNode) -> tuple:
    """Everything a rendering of the tree shows: equal signatures, nothing to redraw."""
    return tuple((n.thread_id, n.depth, n.title, n.streaming) for n in walk(node))


def path(store: Store, thread_id: int) -> list[int]:
    """The thread ids from the main thread down to `thread_id` (parents as far as the store knows them)."""
    chain = [thread_id]
    while len(chain) <= MAX_DEPTH:
        parent = _entry(store, chain[-1]).get("parent_id")
        if parent is None or parent in chain:
            break
        chain.append(parent)
    return chain[::-1]


def preview(store: Store, thread_id: int, lines: int = 3, chars: int = 240) -> str | None:
    """The first lines of a thread's first answer; "" when it has none yet; None when it is not loaded."""
    state = store.get(thread_id)
    if state is None or not state.loaded:
        return None
    for message in state.messages:
        if message.role == "assistant" and message.text.strip():
            kept = [line for line in message.text.strip().splitlines() if line.strip()][:lines]
            text = "\n".join(kept)
            return text[:chars].rstrip() + "…" if len(text) > chars else text
    return ""
