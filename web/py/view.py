"""The DOM: sidebar, thread panels (the main thread and its pin panels), messages, composer, the pin button.

Rendering is batched: a store notification only marks a panel dirty and asks for one animation frame; the frame
renders each dirty panel once, however many tokens arrived since the last one. A streaming answer gets only its
new text, appended to one Text node (`appendData`); nothing re-copies the whole answer. Model text is only ever
inserted as text (`createTextNode`, `textContent`, `appendData`), never as HTML, so a token such as `<script>` or
`<img src=x onerror=...>` shows as those characters.

The view calls back into `actions` (see main.py) for everything that talks to the server; it never fetches.
Handlers are `create_proxy` objects kept in a `Listeners` registry and destroyed on teardown (a bare Python function
would be a borrowed proxy, destroyed right after `addEventListener` returns).

The conversation tree, the anchor hover card (tree_view.py) and the merge dialog (merge_view.py) are parts of the
View; they redraw on the same animation frame, from `Store.subscribe_any` notifications.

Test hooks: each panel has `data-thread-id`; each message `data-message-id`, `data-role`, `data-status`,
`data-kind`; controls have `data-testid` (`new-thread`, `import`, `delete-thread`, `composer`, `send`, `stop`,
`pin`, `close-pin`, `breadcrumb`, `suggestions`, `suggestion`, `thread-error`, `global-error`).
"""

from __future__ import annotations

import js
from pyodide.ffi import create_once_callable, create_proxy

import tree
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


def role_label(message: Message) -> str:
    if message.kind == "merge":
        count = len(message.merged_ids or ())
        return f"Merged write-up of {count} thread{'s' if count != 1 else ''}" if count else "Merged write-up"
    return "You" if message.role == "user" else "Assistant"


class MessageView:
    """One message element; remembers what it shows so that each render only applies the difference."""

    def __init__(self, message: Message) -> None:
        self.key = message.key
        self.node = el("div", "msg", data_role=message.role, data_key=message.key, data_kind=message.kind)
        head = el("div", "msg-head")
        head.appendChild(el("span", "msg-role", role_label(message)))
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
        self.crumbs = el("nav", "breadcrumb", data_testid="breadcrumb", aria_label="Where this pin is")
        self.crumbs.hidden = True
        self.crumbs_shown: tuple | None = None
        self.node.appendChild(self.crumbs)
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
        self.suggestions = el("div", "suggestions", data_testid="suggestions", aria_label="Starter questions")
        self.suggestions.hidden = True
        self.suggestions_shown: tuple | None = None
        self.node.appendChild(self.suggestions)

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
        self.listeners.add(self.crumbs, "click", self._on_crumb_click)
        self.listeners.add(self.suggestions, "click", self._on_suggestion_click)
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
            self.view.hide_preview()
            self.view.actions.open_pin(int(mark.dataset.pinId), self.thread_id)

    def _on_crumb_click(self, event) -> None:
        crumb = closest(event.target, "button.crumb")
        if crumb:
            self.view.actions.open_any(int(crumb.dataset.threadId))

    def _on_suggestion_click(self, event) -> None:
        button = closest(event.target, "button.suggestion")
        if button and not button.disabled:
            self.view.actions.send(self.thread_id, str(button.dataset.question))

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
        self._render_suggestions(state)
        self.send.disabled = state.streaming
        self.stop.disabled = not state.streaming or state.stopping
        self.node.classList.toggle("is-streaming", state.streaming)
        if near_bottom:
            self.list.scrollTop = self.list.scrollHeight

    def _render_head(self, state: ThreadState) -> None:
        title = tree.label(self.store, self.thread_id)
        if self.is_pin:
            anchor = state.anchor or {}
            quote = anchor.get("text") or ""
            if quote and self.quote.textContent != quote:
                self.quote.textContent = quote
            self.quote.hidden = not quote
            self._render_crumbs()
        if self.title.textContent != title:
            self.title.textContent = title
        label = "stopping…" if state.stopping else ("answering…" if state.streaming else "")
        if not label and self.thread_id in self.view.actions.busy_threads():
            label = "merging…"  # a merge streams into this thread (the merge dialog shows it)
        if self.state_label.textContent != label:
            self.state_label.textContent = label

    def _render_crumbs(self) -> None:
        """Main › Pin › Pin: every item but the last (this pin) opens its thread."""
        chain = tree.path(self.store, self.thread_id)
        shown = tuple((tid, tree.label(self.store, tid)) for tid in chain)
        if shown == self.crumbs_shown:
            return
        self.crumbs_shown = shown
        self.crumbs.textContent = ""
        for i, (tid, label) in enumerate(shown):
            if i:
                self.crumbs.appendChild(el("span", "crumb-sep", "›", aria_hidden="true"))
            if i == len(shown) - 1:
                self.crumbs.appendChild(el("span", "crumb crumb-current", label, aria_current="page"))
            else:
                self.crumbs.appendChild(el("button", "crumb", label, type="button", data_thread_id=tid,
                                           title=f"Open “{label}”"))
        self.crumbs.hidden = len(shown) < 2

    def _render_suggestions(self, state: ThreadState) -> None:
        """A pin's starter questions, while it has no messages; a click sends the question."""
        questions = tuple(str(q) for q in (state.info.get("suggestions") or ()) if str(q).strip())
        visible = self.is_pin and bool(questions) and not state.messages
        shown = (questions, visible, state.streaming)
        if shown == self.suggestions_shown:
            return
        self.suggestions_shown = shown
        self.suggestions.textContent = ""
        if visible:
            for question in questions:
                button = el("button", "suggestion", question, type="button", data_testid="suggestion",
                            data_question=question)
                button.disabled = state.streaming
                self.suggestions.appendChild(button)
        self.suggestions.hidden = not visible
        self.empty.textContent = ("Pick a starter question below, or ask your own." if visible
                                  else "No messages yet. Ask something below.")

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
        self._tree_dirty = False
        self._merge_dirty = False
        self.confirm_delete: int | None = None  # the thread whose delete button asks "Delete?"

        self.sidebar = el("aside", "sidebar")
        head = el("div", "sidebar-head")
        head.appendChild(el("div", "brand", "pinchat"))
        self.new_button = el("button", "new-thread", "+ New thread", type="button", data_testid="new-thread")
        head.appendChild(self.new_button)
        self.import_label = el("label", "import-button", "⇪ Import conversation…",
                               title="Open a conversation exported as JSON")
        self.import_input = el("input", "import-input", type="file", accept=".json,application/json",
                               data_testid="import")
        self.import_label.appendChild(self.import_input)
        head.appendChild(self.import_label)
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
        from merge_view import MergeDialog  # these modules import this one
        from tree_view import PinPreview, TreePane

        self.tree_pane = TreePane(self)
        root.appendChild(self.sidebar)
        root.appendChild(self.tree_pane.node)
        root.appendChild(self.workspace)
        root.appendChild(self.pin_button)
        self.preview = PinPreview(self, root)
        self.merge = MergeDialog(self, root)

        self.listeners.add(self.new_button, "click", lambda e: actions.new_thread())
        self.listeners.add(self.thread_list, "click", self._on_thread_click)
        self.listeners.add(self.import_input, "change", self._on_import)
        self.listeners.add(document, "mouseup", self._on_selection_maybe)
        self.listeners.add(document, "keyup", self._on_selection_maybe)
        self.listeners.add(document, "keydown", self._on_global_key)
        # mousedown on the button must not clear the selection it is about
        self.listeners.add(self.pin_button, "mousedown", lambda e: e.preventDefault())
        self.listeners.add(self.pin_button, "click", self._on_pin_click)
        store.subscribe_list(self._on_list_change)
        store.subscribe_any(self._on_any_change)
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
        if self._tree_dirty:
            self._tree_dirty = False
            if self.tree_pane.render():  # titles, nesting or streams changed: breadcrumbs and heads show them
                for panel in list(self.panels.values()):
                    panel.render()
            if self.preview.pin_id is not None:
                self.preview.render()
        if self._merge_dirty:
            self._merge_dirty = False
            self.merge.render()

    def _on_list_change(self) -> None:
        self._sidebar_dirty = True
        self.tree_changed()
        self.schedule(self.panels.get(self.main_id))  # its title may have changed

    def _on_any_change(self, thread_id, kind: str) -> None:
        self.tree_changed()

    def tree_changed(self) -> None:
        """Something the tree, the breadcrumbs, the preview card or the merge dialog show may have changed."""
        self._tree_dirty = True
        self._merge_dirty = True
        self.schedule()

    def schedule_merge(self) -> None:
        self._merge_dirty = True
        self.schedule()

    # ---- sidebar ----------------------------------------------------------------------------------------------

    def thread_label(self, thread_id: int) -> str:
        return tree.label(self.store, thread_id)

    def render_sidebar(self) -> None:
        self.thread_list.textContent = ""
        if not self.store.thread_list:
            self.thread_list.appendChild(el("div", "thread-list-empty", "No threads yet."))
        busy = self.actions.busy_threads()
        for info in self.store.thread_list:
            tid = info["id"]
            row = el("div", "thread-row", data_thread_id=tid)
            item = el("button", "thread-item", type="button", data_thread_id=tid)
            item.appendChild(el("span", "thread-item-title", self.thread_label(tid)))
            if tid in busy or tree.is_streaming(self.store, tid):
                item.appendChild(el("span", "dot", title="answering"))
            when = str(info.get("updated_at") or info.get("created_at") or "")[:16].replace("T", " ")
            item.appendChild(el("span", "thread-item-meta", when))
            if tid == self.main_id:
                item.setAttribute("aria-current", "true")
            row.appendChild(item)
            confirm = tid == self.confirm_delete
            delete = el("button", "thread-delete", "Delete?" if confirm else "×", type="button",
                        data_testid="delete-thread", data_thread_id=tid,
                        data_confirm="true" if confirm else "false",
                        title="Click again to delete it and its pins" if confirm
                        else "Delete this conversation (asks to confirm)",
                        aria_label="Confirm delete" if confirm else "Delete")
            row.appendChild(delete)
            self.thread_list.appendChild(row)

    def _on_thread_click(self, event) -> None:
        delete = closest(event.target, "[data-testid=delete-thread]")
        if delete:
            tid = int(delete.dataset.threadId)
            if self.confirm_delete == tid:
                self.confirm_delete = None
                self.actions.delete_thread(tid)
            else:
                self.confirm_delete = tid
            self.render_sidebar()
            return
        if self.confirm_delete is not None:
            self.confirm_delete = None
            self.render_sidebar()
        item = closest(event.target, ".thread-item")
        if item:
            self.actions.open_thread(int(item.dataset.threadId))

    def _on_import(self, event) -> None:
        files = self.import_input.files
        if files and files.length:
            self.actions.import_file(files.item(0))
        self.import_input.value = ""  # picking the same file again is a new import

    # ---- tree pane, preview, merge dialog ---------------------------------------------------------------------

    def open_merge(self) -> None:
        if self.main_id is not None:
            self.merge.open(self.main_id)

    def hide_preview(self) -> None:
        self.preview.hide()

    def flash(self, thread_id: int) -> None:
        panel = self.panels.get(thread_id)
        if panel is None:
            return
        panel.node.classList.remove("flash")
        panel.node.offsetWidth  # noqa: B018 - restart the highlight animation
        panel.node.classList.add("flash")
        panel.node.scrollIntoView(js.Object.fromEntries([["block", "nearest"], ["inline", "nearest"]]))

    def show_message(self, thread_id: int, message_id: int) -> bool:
        """Scroll a thread's panel to one of its messages and highlight it; False if it is not shown (yet)."""
        panel = self.panels.get(thread_id)
        if panel is None:
            return False
        node = panel.list.querySelector(f".msg[data-message-id='{int(message_id)}']")
        if not node:
            return False
        node.classList.remove("msg-flash")
        node.offsetWidth  # noqa: B018
        node.classList.add("msg-flash")
        node.scrollIntoView(js.Object.fromEntries([["block", "nearest"]]))
        return True

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
        if self.merge.is_open and self.merge.thread_id != thread_id:
            self.merge.close()
        self.hide_preview()
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
        self.flash(pin_id)
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
        self.tree_changed()  # which nodes are open

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
        self.store.unsubscribe_any(self._on_any_change)
        self.tree_pane.destroy()
        self.preview.destroy()
        self.merge.destroy()
        self.listeners.clear()
