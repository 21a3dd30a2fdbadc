"""One message on screen (a thread panel's messages, the merge dialog's write-up): its role, status badge, text
and error line. An assistant answer (and a merge write-up) is rendered Markdown (md_view.MarkdownBody: only the
changed blocks are rebuilt at each frame); a user message stays plain text: a streaming one gets only its new text,
appended to one Text node (`appendData`). Model text is only ever inserted as text, never as HTML, so a token such
as `<script>` shows as those characters. A finished answer shows its pins' anchors as `<mark class=pin-anchor>`.

Until the renderer is loaded (md_view.load, just after the page became usable) an answer is shown like a user
message, as plain text; `render_as_markdown()` then switches every such view to Markdown (the next render shows it).

Test hooks: each message has `data-message-id`, `data-role`, `data-status`, `data-kind`.
"""

from __future__ import annotations

import weakref

import dom
import md_view
from dom import el
from md_view import MarkdownBody
from store import Message

__all__ = ["MessageView", "role_label", "render_as_markdown", "STATUS_LABELS"]

_plain_answers: weakref.WeakSet = weakref.WeakSet()  # answers shown as plain text while the renderer loads

STATUS_LABELS = {"streaming": "streaming…", "interrupted": "interrupted", "error": "error"}
CUT_OFF_LABEL = "cut off: length limit"
# An answer stopped before its first token: the badge says so, or an empty bubble reads as a rendering fault.
STOPPED_EMPTY_LABEL = "stopped before any text"


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
        self.md = None
        if message.role == "assistant":
            if md_view.loaded():
                self.md = MarkdownBody(self.body)
            else:
                _plain_answers.add(self)
        self.error = el("div", "msg-error")
        self.error.hidden = True
        self.node.appendChild(self.error)
        self.text_node = None  # the Text node a streaming answer grows in
        self.parts_shown = 0  # how many parts of the streaming buffer are in text_node
        self.chars_shown = 0  # code points shown in text_node
        self.anchors_sig: tuple | None = None
        self.badge_state = None
        self.id = None
        self.error_shown = None

    def to_markdown(self) -> None:
        """Show this answer as Markdown from its next render on (which replaces the plain text)."""
        self.md = MarkdownBody(self.body, replacing=True)
        self.text_node = None
        self.parts_shown = self.chars_shown = 0
        self.anchors_sig = None

    def render(self, message: Message, anchors: list[tuple[int, int, int]]) -> None:
        if message.id != self.id:
            self.id = message.id
            if message.id is None:
                self.node.removeAttribute("data-message-id")
            else:
                self.node.dataset.messageId = str(message.id)
        empty = message.status == "interrupted" and message.role == "assistant" and not (
            message.content or (message.parts and any(message.parts)))
        if (message.status, message.cut_off, empty) != self.badge_state:
            self.badge_state = (message.status, message.cut_off, empty)
            self.node.dataset.status = message.status
            label = STATUS_LABELS.get(message.status)
            if message.role == "user" and message.status == "error":
                label = "not sent"
            elif message.cut_off:  # else it reads as a whole answer that ends mid-sentence
                label = CUT_OFF_LABEL
            elif empty:
                label = STOPPED_EMPTY_LABEL
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
        if self.md is not None:
            if len(parts) != self.parts_shown:
                self.parts_shown = len(parts)
                self.md.update("".join(parts))
            return
        if self.text_node is None:
            self.body.textContent = ""
            text = "".join(parts)
            self.text_node = dom.text(text)
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
        if self.md is not None:
            self.anchors_sig = sig
            self.md.show(content, anchors)
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
                self.body.appendChild(dom.text(content[pos:start]))
            mark = el("mark", "pin-anchor", content[start:end], data_pin_id=pin_id, title="Open this pin", tabindex="0")
            self.body.appendChild(mark)
            pos = end
        if pos < len(content) or not anchors:
            self.body.appendChild(dom.text(content[pos:]))


def render_as_markdown() -> None:
    """The renderer is loaded: every answer shown as plain text so far becomes Markdown at its next render."""
    for view in list(_plain_answers):
        view.to_markdown()
    _plain_answers.clear()
