"""The draft: the main panel of a thread not created yet, so that the page always opens ready to type.

A draft has no server row. "+ New thread", a first visit and a thread that is gone show one; its first message
creates the thread (`actions.create_with(text)`, main.App), then the thread's own panel (thread_panel.py) takes its
place. Until the server has answered, the text stays in the composer (read-only), and it stays there, editable,
when the thread could not be created. It is handed the `view` and calls back only through `view.actions`.

Test hooks: the panel is `section.panel-main[data-draft=true]` (no `data-thread-id`); its controls have the
`data-testid`s of a thread panel (`composer`, `send`, `thread-error`).
"""

from __future__ import annotations

from dom import Listeners, composer, el, sends
from unsent import NEW

__all__ = ["DraftPanel"]


class DraftPanel:
    def __init__(self, view) -> None:
        self.view = view
        self.listeners = Listeners()
        self.busy = False
        self.node = el("section", "panel panel-main panel-draft", data_draft="true")
        head = el("header", "panel-head")
        head.appendChild(el("h2", "panel-title", "New thread"))
        self.state_label = el("span", "panel-state")
        head.appendChild(self.state_label)
        self.node.appendChild(head)
        messages = el("div", "messages")
        messages.appendChild(el("div", "messages-empty", "Ask anything: your first message starts the thread."))
        self.node.appendChild(messages)
        self.error = el("div", "panel-error", role="alert", data_testid="thread-error")
        self.error.hidden = True
        self.node.appendChild(self.error)
        form, self.input, self.send, _ = composer("Message… (Enter to send)", aria_label="Message")
        self.node.appendChild(form)
        self.listeners.add(form, "submit", self._on_submit)
        self.listeners.add(self.input, "keydown", self._on_key)
        view.actions.unsent.attach(self.listeners, self.input, NEW)

    def _on_submit(self, event) -> None:
        event.preventDefault()
        self.submit()

    def _on_key(self, event) -> None:
        if sends(event):
            event.preventDefault()
            self.submit()

    def submit(self) -> None:
        text = str(self.input.value)
        if self.busy or not text.strip():
            return
        self.set_busy(True)
        self.view.actions.unsent.save(NEW, "")  # written back if the thread cannot be made (failed)
        self.view.actions.create_with(text)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.input.readOnly = busy  # not disabled: a disabled textarea loses the focus and the caret
        self.send.disabled = busy
        self.state_label.textContent = "starting…" if busy else ""
        if busy:
            self.set_error(None)

    def failed(self, message: str) -> None:
        """The thread could not be created: the text stays, with the reason, ready to send again."""
        self.set_busy(False)
        self.view.actions.unsent.save(NEW, str(self.input.value))
        self.set_error(message)
        self.focus()

    def set_error(self, message: str | None) -> None:
        self.error.textContent = message or ""
        self.error.hidden = not message

    def focus(self) -> None:
        self.input.focus()

    def destroy(self) -> None:
        self.listeners.clear()
        self.node.remove()
