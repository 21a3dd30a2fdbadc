"""The DOM: sidebar, thread panels (the main thread and its pin panels), messages, composer, the pin button.

Rendering is batched: a store notification only marks a panel dirty and asks for one animation frame; the frame
renders each dirty panel once, however many tokens arrived since the last one. A streaming answer gets only its
new text, appended to one Text node (`appendData`); nothing re-copies the whole answer. Model text is only ever
inserted as text (`createTextNode`, `textContent`, `appendData`), never as HTML, so a token such as `<script>` or
`<img src=x onerror=...>` shows as those characters.

The view calls back into `actions` (see main.py) for everything that talks to the server; it never fetches.
Handlers are `create_proxy` objects kept in a `Listeners` registry and destroyed on teardown (a bare Python function
would be a borrowed proxy, destroyed right after `addEventListener` returns).

Test hooks: each panel has `data-thread-id`; each message `data-message-id`, `data-role`, `data-status`;
controls have `data-testid` (`new-thread`, `composer`, `send`, `stop`, `pin`, `close-pin`, `thread-error`,
`global-error`).
"""

from __future__ import annotations

import js
from pyodide.ffi import create_once_callable, create_proxy

from store import Message, Store, ThreadState

__all__ = ["View", "Listeners"]

document = js.document
STATUS_LABELS = {"streaming": "streaming…", "interrupted": "interrupted", "error": "error"}


class Listeners:
    """addEventListener with a kept proxy; `clear()` removes every listener, then destroys its proxy."""

    def __init__(self) -> None:
        self._items: list = []

    def add(self, target, event: str, handler, options=None) -> None:
        proxy = create_proxy(handler)
        if options is None:
            target.addEventListener(event, proxy)
        else:
            target.addEventListener(event, proxy, options)
        self._items.append((target, event, proxy))

    def clear(self) -> None:
        for target, event, proxy in self._items:
            target.removeEventListener(event, proxy)
            proxy.destroy()
        self._items = []


def el(tag: str, cls: str | None = None, text: str | None = None, **attrs):
    node = document.createElement(tag)
    if cls:
        node.className = cls
    if text is not None:
        node.textContent = text
    for name, value in attrs.items():
        node.setAttribute(name.replace("_", "-"), str(value))
    return node


def closest(node, selector: str):
    """Element.closest for any node (a Text node has no closest()); jsnull when there is none."""
    if not node:
        return node
    if node.nodeType != 1:
        node = node.parentElement
        if not node:
            return node
    return node.closest(selector)


class MessageView:
    """One message element; remembers what it shows so that each render only applies the difference."""

    def __init__(self, message: Message) -> None:
        self.key = message.key
        self.node = el("div", "msg", data_role=message.role, data_key=message.key)
        head = el("div", "msg-head")
        head.appendChild(el("span", "msg-role", "You" if message.role == "user" else "Assistant"))
        self.badge = el("span", "msg-badge")
        self.badge.hidden = True
        head.appendChild(self.badge)
        self.node.appendChild(head)
        self.body = el("div", "msg-body")
        self.node.appendChild(self.body)
        self.error = el("div", "msg-error")
        self.error.hidden = True
        self.node.appendChild(self.error)
        self.text_node = None  # the Text node a streaming answer grows in
        self.parts_shown = 0  # how many parts of the streaming buffer are in text_node
        self.chars_shown = 0  # code points shown in text_node
        self.anchors_sig: tuple | None = None
        self.status = None
        self.id = None
        self.error_shown = None

    def render(self, message: Message, anchors: list[tuple[int, int, int]]) -> None:
        if message.id != self.id:
            self.id = message.id
            if message.id is None:
                self.node.removeAttribute("data-message-id")
            else:
                self.node.dataset.messageId = str(message.id)
        if message.status != self.status:
            self.status = message.status
            self.node.dataset.status = message.status
            label = STATUS_LABELS.get(message.status)
            if message.role == "user" and message.status == "error":
                label = "not sent"
            self.badge.textContent = label or ""
            self.badge.hidden = not label
        if message.parts is not None:
            self._append_stream(message.parts)
        else:
            self._show_final(message.content, anchors)
        error = message.error.get("message") if message.error else None
        if error != self.error_shown:
            self.error_shown = error
            self.error.textContent = error or ""
            self.error.hidden = not error

    def _append_stream(self, parts: list[str]) -> None:
        if self.text_node is None:
            self.body.textContent = ""
            text = "".join(parts)
            self.text_node = document.createTextNode(text)
            self.body.appendChild(self.text_node)
            self.parts_shown = len(parts)
            self.chars_shown = len(text)
            return
        if len(parts) > self.parts_shown:
            delta = "".join(parts[self.parts_shown:])
            self.parts_shown = len(parts)
            self.chars_shown += len(delta)
            self.text_node.appendData(delta)

    def _show_final(self, content: str, anchors: list[tuple[int, int, int]]) -> None:
        sig = (len(content), tuple(anchors))
        if sig == self.anchors_sig:
            return
        if not anchors and self.text_node is not None and self.anchors_sig is None:
            # It was streamed here: content is what we showed plus whatever came after the last frame.
            if len(content) > self.chars_shown:
                self.text_node.appendData(content[self.chars_shown:])
                self.chars_shown = len(content)
            self.anchors_sig = sig
            return
        self.anchors_sig = sig
        self.text_node = None
        self.body.textContent = ""
        pos = 0
        for pin_id, start, end in anchors:
            if start < pos or end > len(content) or start >= end:
                continue  # overlapping or stale anchor: leave it unmarked
            if start > pos:
                self.body.appendChild(document.createTextNode(content[pos:start]))
            mark = el("mark", "pin-anchor", content[start:end], data_pin_id=pin_id, title="Open this pin")
            self.body.appendChild(mark)
            pos = end
        if pos < len(content) or not anchors:
            self.body.appendChild(document.createTextNode(content[pos:]))


class ThreadPanel:
    """One thread: header, messages, error line and composer. Subscribed to its thread in the store."""

    def __init__(self, view: View, thread_id: int, is_pin: bool) -> None:
        self.view = view
        self.store = view.store
        self.thread_id = thread_id
        self.is_pin = is_pin
        self.listeners = Listeners()
        self.messages: dict[str, MessageView] = {}
        self.order: list[str] = []
        self.renders = 0
        self.error_shown = None

        self.node = el("section", "panel panel-pin" if is_pin else "panel panel-main", data_thread_id=thread_id)
        head = el("header", "panel-head")
        self.title = el("h2", "panel-title")
        head.appendChild(self.title)
        self.state_label = el("span", "panel-state")
        head.appendChild(self.state_label)
        if is_pin:
            close = el("button", "icon-button", "×", type="button", title="Close this pin panel",
                       data_testid="close-pin", aria_label="Close pin")
            head.appendChild(close)
            self.listeners.add(close, "click", lambda e: view.actions.close_pin(thread_id))
        self.node.appendChild(head)
        self.quote = el("blockquote", "pin-quote")
        self.quote.hidden = True
        self.node.appendChild(self.quote)
        self.list = el("div", "messages")
        self.empty = el("div", "messages-empty", "No messages yet. Ask something below.")
        self.list.appendChild(self.empty)
        self.node.appendChild(self.list)
        self.error = el("div", "panel-error", role="alert", data_testid="thread-error")
        self.error.hidden = True
        self.node.appendChild(self.error)

        form = el("form", "composer")
        self.input = el("textarea", "composer-input", data_testid="composer", rows=2,
                        placeholder="Ask in this pin…" if is_pin else "Message… (Enter to send)")
        self.send = el("button", "send-button", "Send", type="submit", data_testid="send")
        self.stop = el("button", "stop-button", "Stop", type="button", data_testid="stop", title="Stop (Esc)")
        buttons = el("div", "composer-buttons")
        buttons.appendChild(self.send)
        buttons.appendChild(self.stop)
        form.appendChild(self.input)
        form.appendChild(buttons)
        self.node.appendChild(form)

        self.listeners.add(form, "submit", self._on_submit)
        self.listeners.add(self.input, "keydown", self._on_key)
        self.listeners.add(self.stop, "click", lambda e: view.actions.stop(thread_id))
        self.listeners.add(self.list, "click", self._on_list_click)
        self.store.subscribe(thread_id, self._on_change)
        self.render()

    # ---- events -----------------------------------------------------------------------------------------------

    def _on_change(self, thread_id: int, kind: str) -> None:
        self.view.schedule(self)

    def _on_submit(self, event) -> None:
        event.preventDefault()
        self.submit()

    def submit(self) -> None:
        text = str(self.input.value)
        if not text.strip():
            return
        if self.view.actions.send(self.thread_id, text):
            self.input.value = ""

    def _on_key(self, event) -> None:
        if event.key == "Enter" and not event.shiftKey and not event.isComposing:
            event.preventDefault()
            self.submit()
        elif event.key == "Escape":
            event.preventDefault()
            event.stopPropagation()
            self.view.actions.stop(self.thread_id)

    def _on_list_click(self, event) -> None:
        mark = closest(event.target, "mark.pin-anchor")
        if mark:
            self.view.actions.open_pin(int(mark.dataset.pinId), self.thread_id)

    # ---- rendering --------------------------------------------------------------------------------------------

    def render(self) -> None:
        state = self.store.get(self.thread_id)
        self.renders += 1
        self.node.dataset.renders = str(self.renders)
        if state is None:
            return
        self._render_head(state)
        near_bottom = self.list.scrollHeight - self.list.scrollTop - self.list.clientHeight < 60
        self._render_messages(state)
        error = state.error.get("message") if state.error else None
        if error and any(m.error is state.error for m in state.messages[-2:]):
            error = None  # already shown under the message it is about
        if error != self.error_shown:
            self.error_shown = error
            self.error.textContent = error or ""
            self.error.hidden = not error
            if state.error:
                self.error.dataset.code = str(state.error.get("code", ""))
        self.send.disabled = state.streaming
        self.stop.disabled = not state.streaming or state.stopping
        self.node.classList.toggle("is-streaming", state.streaming)
        if near_bottom:
            self.list.scrollTop = self.list.scrollHeight

    def _render_head(self, state: ThreadState) -> None:
        if self.is_pin:
            anchor = state.anchor or {}
            title = state.title or f"Pin #{self.thread_id}"
            quote = anchor.get("text") or ""
            if quote and self.quote.textContent != quote:
                self.quote.textContent = quote
            self.quote.hidden = not quote
        else:
            title = self.view.thread_label(self.thread_id)
        if self.title.textContent != title:
            self.title.textContent = title
        label = "stopping…" if state.stopping else ("answering…" if state.streaming else "")
        if self.state_label.textContent != label:
            self.state_label.textContent = label

    def _render_messages(self, state: ThreadState) -> None:
        anchors: dict[int, list[tuple[int, int, int]]] = {}
        for pin in state.pins:
            anchor = pin.get("anchor") or {}
            if anchor.get("message_id") is not None:
                anchors.setdefault(anchor["message_id"], []).append((pin["id"], anchor["start"], anchor["end"]))
        for spans in anchors.values():
            spans.sort(key=lambda s: (s[1], s[2]))
        keys = [m.key for m in state.messages]
        if keys != self.order:
            self._reorder(state.messages)
        for message in state.messages:
            view = self.messages[message.key]
            view.render(message, anchors.get(message.id, []) if message.role == "assistant" else [])
        self.empty.hidden = bool(state.messages)

    def _reorder(self, messages: list[Message]) -> None:
        wanted = {m.key for m in messages}
        for key in list(self.messages):
            if key not in wanted:
                self.messages.pop(key).node.remove()
        for message in messages:  # append in order; appendChild moves an existing node
            view = self.messages.get(message.key)
            if view is None:
                view = self.messages[message.key] = MessageView(message)
            self.list.appendChild(view.node)
        self.order = [m.key for m in messages]

    def focus(self) -> None:
        self.input.focus()

    def destroy(self) -> None:
        self.store.unsubscribe(self.thread_id, self._on_change)
        self.listeners.clear()
        self.node.remove()


class View:
    """The whole page. `actions` is the controller (main.App) the view reports user intents to."""

    def __init__(self, store: Store, actions, root) -> None:
        self.store = store
        self.actions = actions
        self.root = root
        self.listeners = Listeners()
        self.panels: dict[int, ThreadPanel] = {}
        self.main_id: int | None = None
        self.pin_ids: list[int] = []
        self._dirty: set = set()
        self._frame_pending = False
        self._sidebar_dirty = False
        self.frames = 0
        self.pending_pin: dict | None = None

        self.sidebar = el("aside", "sidebar")
        head = el("div", "sidebar-head")
        head.appendChild(el("div", "brand", "pinchat"))
        self.new_button = el("button", "new-thread", "+ New thread", type="button", data_testid="new-thread")
        head.appendChild(self.new_button)
        self.sidebar.appendChild(head)
        self.global_error = el("div", "global-error", role="alert", data_testid="global-error")
        self.global_error.hidden = True
        self.sidebar.appendChild(self.global_error)
        self.thread_list = el("nav", "thread-list", aria_label="Threads")
        self.sidebar.appendChild(self.thread_list)
        self.workspace = el("main", "workspace")
        self.placeholder = el("div", "workspace-empty", "Start a new thread, or pick one on the left.")
        self.workspace.appendChild(self.placeholder)
        self.pin_button = el("button", "pin-button", "📌 Pin", type="button", data_testid="pin",
                             title="Open a pin thread about the selected text")
        self.pin_button.hidden = True
        root.appendChild(self.sidebar)
        root.appendChild(self.workspace)
        root.appendChild(self.pin_button)

        self.listeners.add(self.new_button, "click", lambda e: actions.new_thread())
        self.listeners.add(self.thread_list, "click", self._on_thread_click)
        self.listeners.add(document, "mouseup", self._on_selection_maybe)
        self.listeners.add(document, "keyup", self._on_selection_maybe)
        self.listeners.add(document, "keydown", self._on_global_key)
        # mousedown on the button must not clear the selection it is about
        self.listeners.add(self.pin_button, "mousedown", lambda e: e.preventDefault())
        self.listeners.add(self.pin_button, "click", self._on_pin_click)
        store.subscribe_list(self._on_list_change)
        self.render_sidebar()

    # ---- batching ---------------------------------------------------------------------------------------------

    def schedule(self, panel=None) -> None:
        if panel is not None:
            self._dirty.add(panel)
        if not self._frame_pending:
            self._frame_pending = True
            js.requestAnimationFrame(create_once_callable(self._frame))

    def _frame(self, _timestamp=None) -> None:
        self._frame_pending = False
        self.frames += 1
        dirty, self._dirty = self._dirty, set()
        for panel in dirty:
            if self.panels.get(panel.thread_id) is panel:
                panel.render()
        if self._sidebar_dirty:
            self._sidebar_dirty = False
            self.render_sidebar()

    def _on_list_change(self) -> None:
        self._sidebar_dirty = True
        self.schedule(self.panels.get(self.main_id))  # its title may have changed

    # ---- sidebar ----------------------------------------------------------------------------------------------

    def thread_label(self, thread_id: int) -> str:
        state = self.store.get(thread_id)
        listed = next((t for t in self.store.thread_list if t.get("id") == thread_id), {})
        title = listed.get("title") or (state.info.get("title") if state is not None else None)
        if title:
            return title
        if state is not None:
            for message in state.messages:
                if message.role == "user":
                    text = " ".join(message.content.split())
                    return text[:60] + ("…" if len(text) > 60 else "")
        return f"New thread #{thread_id}"

    def render_sidebar(self) -> None:
        self.thread_list.textContent = ""
        if not self.store.thread_list:
            self.thread_list.appendChild(el("div", "thread-list-empty", "No threads yet."))
        for info in self.store.thread_list:
            tid = info["id"]
            state = self.store.get(tid)
            item = el("button", "thread-item", type="button", data_thread_id=tid)
            item.appendChild(el("span", "thread-item-title", self.thread_label(tid)))
            streaming = (state.streaming if state is not None else False) or bool(info.get("streaming"))
            if streaming:
                item.appendChild(el("span", "dot", title="answering"))
            when = str(info.get("updated_at") or info.get("created_at") or "")[:16].replace("T", " ")
            item.appendChild(el("span", "thread-item-meta", when))
            if tid == self.main_id:
                item.setAttribute("aria-current", "true")
            self.thread_list.appendChild(item)

    def _on_thread_click(self, event) -> None:
        item = closest(event.target, ".thread-item")
        if item:
            self.actions.open_thread(int(item.dataset.threadId))

    def show_global_error(self, message: str | None) -> None:
        self.global_error.textContent = message or ""
        self.global_error.hidden = not message

    # ---- panels -----------------------------------------------------------------------------------------------

    def show_thread(self, thread_id: int | None) -> None:
        """Make `thread_id` the main panel; pin panels of the previous thread close (their streams go on)."""
        for tid in list(self.pin_ids):
            self.close_pin(tid)
        if self.main_id is not None and self.main_id != thread_id:
            panel = self.panels.pop(self.main_id, None)
            if panel is not None:
                panel.destroy()
        self.main_id = thread_id
        self.placeholder.hidden = thread_id is not None
        if thread_id is not None and thread_id not in self.panels:
            panel = self.panels[thread_id] = ThreadPanel(self, thread_id, is_pin=False)
            self.workspace.insertBefore(panel.node, self.workspace.firstChild)
        self._sidebar_dirty = True
        self.schedule()
        self._sync_layout()

    def open_pin(self, pin_id: int) -> ThreadPanel:
        panel = self.panels.get(pin_id)
        if panel is None:
            panel = self.panels[pin_id] = ThreadPanel(self, pin_id, is_pin=True)
            self.pin_ids.append(pin_id)
            self.workspace.appendChild(panel.node)
            self._sync_layout()
        panel.node.classList.remove("flash")
        panel.node.offsetWidth  # noqa: B018 - restart the highlight animation
        panel.node.classList.add("flash")
        panel.node.scrollIntoView(js.Object.fromEntries([["block", "nearest"], ["inline", "nearest"]]))
        return panel

    def close_pin(self, pin_id: int) -> None:
        panel = self.panels.pop(pin_id, None)
        if panel is not None:
            panel.destroy()
        if pin_id in self.pin_ids:
            self.pin_ids.remove(pin_id)
        self._sync_layout()

    def _sync_layout(self) -> None:
        self.workspace.dataset.pins = str(len(self.pin_ids))

    def panel_of(self, node) -> ThreadPanel | None:
        section = closest(node, "section.panel")
        if not section:
            return None
        return self.panels.get(int(section.dataset.threadId))

    # ---- keyboard ---------------------------------------------------------------------------------------------

    def _on_global_key(self, event) -> None:
        if event.key != "Escape":
            return
        panel = self.panel_of(document.activeElement)
        if panel is None and self.main_id is not None:
            panel = self.panels.get(self.main_id)
        if panel is not None:
            self.actions.stop(panel.thread_id)

    # ---- selecting text to pin --------------------------------------------------------------------------------

    def _on_selection_maybe(self, event) -> None:
        if closest(event.target, ".pin-button"):
            return
        self.pending_pin = self._selected_anchor()
        if self.pending_pin is None:
            self.pin_button.hidden = True
            return
        rect = self.pending_pin.pop("rect")
        self.pin_button.hidden = False
        top = max(4, rect.top + js.window.scrollY - self.pin_button.offsetHeight - 8)
        left = max(4, min(rect.left + js.window.scrollX + rect.width / 2 - self.pin_button.offsetWidth / 2,
                          js.window.innerWidth - self.pin_button.offsetWidth - 4))
        self.pin_button.style.top = f"{top}px"
        self.pin_button.style.left = f"{left}px"

    def _selected_anchor(self) -> dict | None:
        """The selection as an anchor {thread_id, message_id, start, end, text}, if it lies inside one finished
        assistant answer. Offsets are code points into the message content, as the server counts them."""
        selection = js.window.getSelection()
        if not selection or selection.isCollapsed or selection.rangeCount == 0:
            return None
        selected = selection.getRangeAt(0)
        body = closest(selected.commonAncestorContainer, ".msg-body")
        if not body:
            return None
        msg = closest(body, ".msg")
        panel = self.panel_of(body)
        if panel is None or msg.dataset.role != "assistant" or not msg.dataset.messageId:
            return None
        if msg.dataset.status == "streaming":
            return None
        before = document.createRange()
        before.setStart(body, 0)
        before.setEnd(selected.startContainer, selected.startOffset)
        start = len(str(before.toString()))  # JS UTF-16 string -> Python str: code points
        text = str(selected.toString())
        state = self.store.get(panel.thread_id)
        message = state.message_by_id(int(msg.dataset.messageId)) if state is not None else None
        if message is None or not text.strip():
            return None
        end = start + len(text)
        if message.content[start:end] != text:
            return None
        return {"thread_id": panel.thread_id, "message_id": message.id, "start": start, "end": end,
                "text": text, "rect": selected.getBoundingClientRect()}

    def _on_pin_click(self, event) -> None:
        pending, self.pending_pin = self.pending_pin, None
        self.pin_button.hidden = True
        if pending is None:
            return
        js.window.getSelection().removeAllRanges()
        self.actions.pin(pending["thread_id"], pending["message_id"], pending["start"], pending["end"])

    def destroy(self) -> None:
        for tid in list(self.panels):
            self.panels.pop(tid).destroy()
        self.store.unsubscribe_list(self._on_list_change)
        self.listeners.clear()
