"""The DOM helpers the views build on: the only view-side module that touches `js` / `pyodide`.

* `el()` makes an element (text only ever as text, never as HTML); `text()` a Text node; `closest()` is
  Element.closest for any node; `composer()` a panel's message box and `sends()` its Enter-to-send rule.
* `Listeners` adds event listeners through kept `create_proxy` objects and removes + destroys them on `clear()`
  (a bare Python function would be a borrowed proxy, destroyed right after `addEventListener` returns).
* `from_html()` parses markup that is safe by construction (markdown_html) into an element; `text_position()`
  turns a DOM Range boundary into (Text node, offset), `child_of()` and `text_before()` place it in a rendered
  block; `copy_text()` puts text on the clipboard; `after()` runs a callback later; `TabStorage` is the tab's
  sessionStorage (unsent.py keeps the composers' text in it).
* `Tasks` keeps the asyncio tasks a controller spawns alive and reports the ones that fail.
* `next_frame()` runs a callback on the next animation frame; `options()` makes a plain JS options object;
  `scroll_into_view()`, `selection()`, `new_range()`, `window_box()` and `by_id()` wrap the rest of what the views
  need from `window` and `document`.
"""

from __future__ import annotations

import asyncio

import js
from pyodide.ffi import JsException, create_once_callable, create_proxy

__all__ = ["document", "window", "Listeners", "Tasks", "el", "composer", "sends",
           "text", "closest", "options", "next_frame", "scroll_into_view",
           "selection", "new_range", "window_box", "by_id", "log_error", "set_title", "page_visible",
           "from_html", "child_of", "text_before", "text_position", "copy_text", "after", "TabStorage"]

document = js.document
window = js.window


class Listeners:
    """addEventListener with a kept proxy; `clear()` removes every listener, then destroys its proxy."""

    def __init__(self) -> None:
        self._items: list = []

    def add(self, target, event: str, handler, opts=None) -> None:
        proxy = create_proxy(handler)
        if opts is None:
            target.addEventListener(event, proxy)
        else:
            target.addEventListener(event, proxy, opts)
        self._items.append((target, event, proxy, opts))

    def clear(self) -> None:
        for target, event, proxy, opts in self._items:
            if opts is None:
                target.removeEventListener(event, proxy)
            else:  # a capture listener is only removed with the same capture flag
                target.removeEventListener(event, proxy, opts)
            proxy.destroy()
        self._items = []


class Tasks:
    """The tasks a controller spawns, kept by strong reference (asyncio keeps tasks only weakly). A task that
    fails is logged to the console and handed to `on_error(exc)`, if given."""

    def __init__(self, on_error=None) -> None:
        self.on_error = on_error
        self._items: set[asyncio.Task] = set()

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._items.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._items.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log_error(f"pinchat: {exc!r}")
        if self.on_error is not None:
            self.on_error(exc)

    def cancel_all(self) -> None:
        for task in list(self._items):
            task.cancel()


def el(tag: str, cls: str | None = None, text: str | None = None, **attrs):
    node = document.createElement(tag)
    if cls:
        node.className = cls
    if text is not None:
        node.textContent = text
    for name, value in attrs.items():
        node.setAttribute(name.replace("_", "-"), str(value))
    return node


def composer(placeholder: str, **input_attrs):
    """A panel's message box: (form, textarea, Send button, the buttons' row). Enter sends (`sends`)."""
    form = el("form", "composer")
    box = el("textarea", "composer-input", data_testid="composer", rows=2, placeholder=placeholder, **input_attrs)
    send = el("button", "send-button", "Send", type="submit", data_testid="send")
    buttons = el("div", "composer-buttons")
    buttons.appendChild(send)
    form.appendChild(box)
    form.appendChild(buttons)
    return form, box, send, buttons


def sends(event) -> bool:
    """A keydown that sends the message: Enter, not Shift+Enter (a new line), not while an IME composes."""
    return event.key == "Enter" and not event.shiftKey and not event.isComposing


def text(value: str):
    return document.createTextNode(value)


def closest(node, selector: str):
    """Element.closest for any node (a Text node has no closest()); jsnull when there is none."""
    if not node:
        return node
    if node.nodeType != 1:
        node = node.parentElement
        if not node:
            return node
    return node.closest(selector)


def options(**values):
    """A plain JS object, e.g. `options(capture=True, passive=True)` for addEventListener."""
    return js.Object.fromEntries([[name, value] for name, value in values.items()])


def next_frame(callback) -> None:
    js.requestAnimationFrame(create_once_callable(callback))


def scroll_into_view(node, **how) -> None:
    node.scrollIntoView(options(**how))


def selection():
    return window.getSelection()


def new_range():
    return document.createRange()


def window_box() -> tuple[float, float, float, float]:
    """(scrollX, scrollY, innerWidth, innerHeight)."""
    return window.scrollX, window.scrollY, window.innerWidth, window.innerHeight


def by_id(element_id: str):
    return document.getElementById(element_id)


def log_error(text_value: str) -> None:
    js.console.error(text_value)


def set_title(title: str) -> None:
    document.title = title


def page_visible() -> bool:
    return str(document.visibilityState) == "visible"


def from_html(markup: str):
    """The element `markup` parses to (a <div> holding them when it is not one element). Only for markup that is
    escaped and allow-listed by construction (markdown_html); a <template> parses it inert: nothing in it loads or
    runs while it is parsed."""
    template = document.createElement("template")
    template.innerHTML = markup
    content = template.content
    first = content.firstChild
    if first and first.nodeType == 1 and not first.nextSibling:
        return first
    holder = document.createElement("div")
    holder.appendChild(content)
    return holder


def child_of(root, node):
    """The child of `root` that holds `node` (or is it), or None."""
    while node and not (node.parentNode and node.parentNode.js_id == root.js_id):
        node = node.parentNode
    return node or None


def text_before(root, target) -> int | None:
    """The characters (code points) of `root`'s Text nodes before `target`, in document order; None when `target`
    is not one of them."""
    walker = document.createTreeWalker(root, 4)  # NodeFilter.SHOW_TEXT
    count = 0
    node = walker.nextNode()
    while node:
        if node.js_id == target.js_id:
            return count
        count += len(str(node.data))
        node = walker.nextNode()
    return None


def text_position(root, container, offset: int):
    """A Range boundary (container, offset) inside `root` as (Text node, offset into it), or None when `root` has
    no text there. An element boundary becomes the start of the next Text node (or the end of the last one)."""
    if container.nodeType == 3:
        return container, int(offset)
    walker = document.createTreeWalker(root, 4)  # NodeFilter.SHOW_TEXT
    children = container.childNodes
    if offset < children.length:
        target = children[offset]
        walker.currentNode = target
        found = target if target.nodeType == 3 else walker.nextNode()
        return (found, 0) if found else None
    node = container
    while node.lastChild:
        node = node.lastChild
    if node.nodeType == 3:
        return node, int(node.length)
    walker.currentNode = node
    found = walker.previousNode()
    return (found, int(found.length)) if found else None


def copy_text(value: str, on_done=None) -> None:
    """Put `value` on the clipboard; `on_done(ok)` is called when the browser has answered."""
    clipboard = window.navigator.clipboard
    if not clipboard:
        if on_done:
            on_done(False)
        return
    promise = clipboard.writeText(value)
    if on_done:
        promise.then(create_once_callable(lambda _=None: on_done(True)),
                     create_once_callable(lambda _=None: on_done(False)))


def after(ms: int, callback) -> None:
    window.setTimeout(create_once_callable(callback), ms)


class TabStorage:
    """The tab's sessionStorage for unsent.Unsent. A browser that refuses it (storage off, quota full) keeps
    nothing and says nothing: the composer works as before, only a reload forgets its text."""

    def get(self, key: str) -> str | None:
        try:
            value = window.sessionStorage.getItem(key)
        except JsException:
            return None
        return value if isinstance(value, str) else None  # a missing key is JS null (pyodide's jsnull, not None)

    def set(self, key: str, value: str) -> None:
        try:
            window.sessionStorage.setItem(key, value)
        except JsException:
            pass

    def remove(self, key: str) -> None:
        try:
            window.sessionStorage.removeItem(key)
        except JsException:
            pass

    def keys(self) -> list[str]:
        try:
            storage = window.sessionStorage
            return [str(storage.key(i)) for i in range(int(storage.length))]
        except JsException:
            return []
