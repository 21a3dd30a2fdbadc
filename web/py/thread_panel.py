"""One thread panel (the main thread, or a pin): header, breadcrumbs and quoted passage of a pin, messages, error
line, a pin's starter questions and the composer. It is handed the `view` (view.View) and calls back only through
it: `view.store`, `view.actions` (the controller, main.App), `view.schedule()`, `view.hide_preview()`.

Test hooks: the panel has `data-thread-id`; controls have `data-testid` (`composer`, `send`, `stop`, `close-pin`,
`breadcrumb`, `suggestions`, `suggestion`, `thread-error`).
"""

from __future__ import annotations

import tree
from dom import Listeners, closest, composer, el, sends
from message_view import MessageView
from store import Message, ThreadState

__all__ = ["ThreadPanel"]


class ThreadPanel:
    """One thread: header, messages, error line and composer. Subscribed to its thread in the store."""

    def __init__(self, view, thread_id: int, is_pin: bool) -> None:
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

        placeholder = "Ask in this pin…" if is_pin else "Message… (Enter to send)"
        form, self.input, self.send, buttons = composer(placeholder)
        self.stop = el("button", "stop-button", "Stop", type="button", data_testid="stop", title="Stop (Esc)")
        buttons.appendChild(self.stop)
        self.node.appendChild(form)

        self.listeners.add(form, "submit", self._on_submit)
        self.listeners.add(self.input, "keydown", self._on_key)
        view.actions.unsent.attach(self.listeners, self.input, thread_id)
        self.listeners.add(self.stop, "click", self._on_stop_click)
        self.listeners.add(self.list, "click", self._on_list_click)
        self.listeners.add(self.list, "keydown", self._on_list_key)  # a focused pin's passage: Enter opens it
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
            self.view.actions.unsent.save(self.thread_id, "")

    def _on_stop_click(self, event) -> None:
        self.view.actions.stop(self.thread_id)
        self.focus()  # Stop is disabled now: the keyboard would fall to the page's body

    def give_back(self, text: str) -> None:
        """A question the server refused comes back to the composer (and to the tab's unsent texts, so a reload
        keeps it), unless something new was typed meanwhile."""
        if not str(self.input.value).strip():
            self.input.value = text
            self.view.actions.unsent.save(self.thread_id, text)

    def _on_key(self, event) -> None:
        if sends(event):
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

    def _on_list_key(self, event) -> None:
        if event.key in ("Enter", " ") and closest(event.target, "mark.pin-anchor"):
            event.preventDefault()
            self._on_list_click(event)

    def _on_crumb_click(self, event) -> None:
        crumb = closest(event.target, "button.crumb")
        if crumb:
            self.view.actions.open_any(int(crumb.dataset.threadId))

    def _on_suggestion_click(self, event) -> None:
        button = closest(event.target, "button.suggestion")
        if button and not button.disabled:
            self.view.actions.send(self.thread_id, str(button.dataset.question))

    # ---- rendering --------------------------------------------------------------------------------------------

    def near_bottom(self) -> bool:
        """Whether the message list is scrolled to (near) its end: it then follows the answer as it grows. Reading
        it lays the page out, so a frame reads it for every panel before any of them changes the DOM."""
        return self.list.scrollHeight - self.list.scrollTop - self.list.clientHeight < 60

    def render(self, follow: bool | None = None) -> bool:
        """Show the thread's state; returns whether the list should now be scrolled to its end (`follow_end`).
        `follow`: `near_bottom()` as read before this frame's DOM changes (read here when not given)."""
        state = self.store.get(self.thread_id)
        self.renders += 1
        self.node.dataset.renders = str(self.renders)
        if state is None:
            return False
        near_bottom = self.near_bottom() if follow is None else follow
        self._render_head(state)
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
        if follow is None and near_bottom:
            self.follow_end()
        return near_bottom

    def follow_end(self) -> None:
        self.list.scrollTop = self.list.scrollHeight

    def _render_head(self, state: ThreadState) -> None:
        title = tree.label(self.store, self.thread_id)
        if self.is_pin:
            quote = tree.passage(self.store, {**state.info, "anchor": state.anchor or {}})
            if quote and self.quote.textContent != quote:
                self.quote.textContent = quote
            self.quote.hidden = not quote
            self._render_crumbs()
        if self.title.textContent != title:
            self.title.textContent = title
        label = "stopping…" if state.stopping else ("reconnecting…" if state.streaming and state.reconnecting
                                                    else "answering…" if state.streaming else "")
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

