"""The pin button over a selected passage: selecting words in a finished answer (plain or rendered Markdown)
shows it above the selection; clicking it asks the controller for a pin on exactly the source characters selected.

Handed the View (its store, `panel_of` and `actions`) like the other panes; its handlers live in its own
`dom.Listeners`. Test hook: `data-testid="pin"`.
"""

from __future__ import annotations

import dom
from dom import Listeners, closest, document, el

__all__ = ["PinSelection"]


class PinSelection:
    def __init__(self, view, root) -> None:
        self.view = view
        self.pending: dict | None = None  # the anchor the button would pin
        self.listeners = Listeners()
        self.button = el("button", "pin-button", "📌 Pin", type="button", data_testid="pin",
                         title="Open a pin thread about the selected text")
        self.button.hidden = True
        root.appendChild(self.button)
        self.listeners.add(document, "mouseup", self._on_selection_maybe)
        self.listeners.add(document, "keyup", self._on_selection_maybe)
        # mousedown on the button must not clear the selection it is about
        self.listeners.add(self.button, "mousedown", lambda e: e.preventDefault())
        self.listeners.add(self.button, "click", self._on_click)

    def _on_selection_maybe(self, event) -> None:
        if closest(event.target, ".pin-button"):
            return
        self.pending = self._selected_anchor()
        if self.pending is None:
            self.button.hidden = True
            return
        rect = self.pending.pop("rect")
        self.button.hidden = False
        scroll_x, scroll_y, width, _ = dom.window_box()
        top = max(4, rect.top + scroll_y - self.button.offsetHeight - 8)
        left = max(4, min(rect.left + scroll_x + rect.width / 2 - self.button.offsetWidth / 2,
                          width - self.button.offsetWidth - 4))
        self.button.style.top = f"{top}px"
        self.button.style.left = f"{left}px"

    def _selected_anchor(self) -> dict | None:
        """The selection as an anchor {thread_id, message_id, start, end, text}, if it lies inside one finished
        assistant answer. Offsets are code points into the message content, as the server counts them."""
        selection = dom.selection()
        if not selection or selection.isCollapsed or selection.rangeCount == 0:
            return None
        selected = selection.getRangeAt(0)
        body = closest(selected.commonAncestorContainer, ".msg-body")
        if not body:
            return None
        msg = closest(body, ".msg")
        panel = self.view.panel_of(body)
        if panel is None or msg.dataset.role != "assistant" or not msg.dataset.messageId:
            return None
        if msg.dataset.status == "streaming":
            return None
        state = self.view.store.get(panel.thread_id)
        message = state.message_by_id(int(msg.dataset.messageId)) if state is not None else None
        text = str(selected.toString())
        if message is None or not text.strip():
            return None
        shown = panel.messages.get(str(msg.dataset.key))
        if shown is not None and shown.md is not None:  # rendered Markdown: map the DOM positions to the source
            span = shown.md.source_range(selected)
            if span is None:
                return None
            start, end = span
        else:
            before = dom.new_range()
            before.setStart(body, 0)
            before.setEnd(selected.startContainer, selected.startOffset)
            start = len(str(before.toString()))  # JS UTF-16 string -> Python str: code points
            end = start + len(text)
            if message.content[start:end] != text:
                return None
        return {"thread_id": panel.thread_id, "message_id": message.id, "start": start, "end": end,
                "text": text, "rect": selected.getBoundingClientRect()}

    def _on_click(self, event) -> None:
        pending, self.pending = self.pending, None
        self.button.hidden = True
        if pending is None:
            return
        dom.selection().removeAllRanges()
        self.view.actions.pin(pending["thread_id"], pending["message_id"], pending["start"], pending["end"])

    def destroy(self) -> None:
        self.listeners.clear()
        self.button.remove()
