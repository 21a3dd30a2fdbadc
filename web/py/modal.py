"""A dialog over the app (the account and users panels): a backdrop, a card with a title and a close button, and a
body the panel fills. Esc, the close button and a click on the backdrop close it. Small form helpers too.
"""

from __future__ import annotations

import accounts
import dom
from dom import Listeners, document, el

__all__ = ["Modal", "field", "feedback", "set_feedback", "rich_text"]


class Modal:
    def __init__(self, parent, title: str, testid: str, on_close) -> None:
        self.on_close = on_close
        self.opener = None
        self.listeners = Listeners()
        self.node = el("div", "modal-backdrop")
        self.node.hidden = True
        self.card = el("div", "modal", role="dialog", aria_modal="true", aria_label=title, data_testid=testid)
        head = el("header", "modal-head")
        head.appendChild(el("h2", "modal-title", title))
        close = el("button", "icon-button", "×", type="button", data_testid=f"{testid}-close", aria_label="Close",
                   title="Close (Esc)")
        head.appendChild(close)
        self.card.appendChild(head)
        self.body = el("div", "modal-body")
        self.card.appendChild(self.body)
        self.node.appendChild(self.card)
        parent.appendChild(self.node)
        self.listeners.add(close, "click", lambda e: self.on_close())
        self.listeners.add(self.node, "mousedown", self._on_backdrop)
        # On the document, capturing: Esc closes the dialog wherever the focus is, before the app's own Esc
        # handler (stop the answer) sees it.
        self.listeners.add(document, "keydown", self._on_key, dom.options(capture=True))

    @property
    def is_open(self) -> bool:
        return not self.node.hidden

    def show(self) -> None:
        self.opener = document.activeElement  # where the focus goes back when it closes (a keyboard user's place)
        self.node.hidden = False

    def hide(self) -> None:
        self.node.hidden = True
        opener, self.opener = self.opener, None
        if opener is not None and opener.isConnected:
            opener.focus()

    def section(self, title: str, testid: str | None = None):
        node = el("section", "modal-section", data_testid=testid) if testid else el("section", "modal-section")
        node.appendChild(el("h3", "modal-section-title", title))
        self.body.appendChild(node)
        return node

    def _on_backdrop(self, event) -> None:
        if event.target == self.node:
            self.on_close()

    def _on_key(self, event) -> None:
        if event.key == "Escape" and self.is_open:
            event.preventDefault()
            event.stopPropagation()  # not the app's Esc (stop the answer)
            self.on_close()

    def destroy(self) -> None:
        self.listeners.clear()
        self.node.remove()


def field(label: str, input_node, hint: str | None = None):
    """A labelled form control: `<label class=field><span>label</span><input ...><small>hint</small></label>`."""
    node = el("label", "field")
    node.appendChild(el("span", "field-label", label))
    node.appendChild(input_node)
    if hint:
        node.appendChild(el("small", "field-hint", hint))
    return node


def feedback(testid: str):
    """The one line under a form that says what happened (`set_feedback` fills it)."""
    node = el("div", "form-feedback", role="status", data_testid=testid)
    node.hidden = True
    return node


def set_feedback(node, text: str | None, kind: str = "ok") -> None:
    node.textContent = text or ""
    node.dataset.kind = kind
    node.hidden = not text


def rich_text(node, text: str | None) -> None:
    """Put `text` into `node`, its `backquoted` parts as <code> (as text, never as HTML)."""
    node.textContent = ""
    for is_code, part in accounts.code_spans(text or ""):
        node.appendChild(el("code", None, part) if is_code else dom.text(part))
