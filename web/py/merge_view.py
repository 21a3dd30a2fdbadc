"""The merge dialog: tick threads of the open conversation, pick a format (or write an instruction), start; the
write-up streams in here through the same machinery as a chat answer (streams.Streams -> store, under the merge key
`merge_key(thread_id)`, drawn by the same MessageView); Stop stops it. The server saves it as a message of the main
thread as it streams, so afterwards there is nothing to save: copy it as Markdown, download it as `.md`, or keep
it (close and show it in the main thread). Closing never deletes it.

Test hooks (`data-testid`): `merge-dialog`, `merge-pick` (checkboxes, with `data-thread-id`), `merge-format`,
`merge-instruction`, `merge-start`, `merge-stop`, `merge-output` (with `data-status`), `merge-copy`,
`merge-download`, `merge-keep`, `merge-close`, `merge-note`, `merge-feedback`.
"""

from __future__ import annotations

import tree
from contract import MERGE_FORMATS, merge_key
from dom import Listeners, closest, document, el
from message_view import MessageView

__all__ = ["MergeDialog"]


class MergeDialog:
    def __init__(self, view, root) -> None:
        self.view = view
        self.store = view.store
        self.actions = view.actions
        self.thread_id: int | None = None
        self.key: str | None = None
        self.picked: set[int] = set()
        self.picks_shown: tuple | None = None
        self.message_view: MessageView | None = None
        self.listeners = Listeners()

        self.node = el("div", "merge-dialog", role="dialog", aria_label="Merge threads", data_testid="merge-dialog",
                       tabindex="-1")  # focusable, so the keyboard (and Esc) stays in it when a button goes
        self.node.hidden = True
        self.opener = None  # what had the focus when it opened: it gets it back on close
        head = el("header", "merge-head")
        head.appendChild(el("h2", "merge-title", "Merge threads"))
        self.close_button = el("button", "icon-button", "×", type="button", data_testid="merge-close",
                               title="Close (the write-up stays saved in the main thread)", aria_label="Close")
        head.appendChild(self.close_button)
        self.node.appendChild(head)

        body = el("div", "merge-body")
        picks = el("fieldset", "merge-picks")
        picks.appendChild(el("legend", None, "Threads to merge"))
        self.picks = el("div", "merge-pick-list")
        picks.appendChild(self.picks)
        body.appendChild(picks)

        row = el("div", "merge-row")
        label = el("label", "merge-label", "Format")
        self.format = el("select", "merge-format", data_testid="merge-format")
        for value, text in MERGE_FORMATS:
            option = el("option", None, text, value=value)
            self.format.appendChild(option)
        label.appendChild(self.format)
        row.appendChild(label)
        self.start_button = el("button", "send-button", "Merge", type="button", data_testid="merge-start")
        self.stop_button = el("button", "stop-button", "Stop", type="button", data_testid="merge-stop")
        row.appendChild(self.start_button)
        row.appendChild(self.stop_button)
        body.appendChild(row)
        self.instruction = el("textarea", "merge-instruction composer-input", data_testid="merge-instruction", rows=2,
                              placeholder="How should the threads be merged? e.g. “a study guide with questions”")
        self.instruction.hidden = True
        body.appendChild(self.instruction)
        self.error = el("div", "panel-error", role="alert", data_testid="merge-error")
        self.error.hidden = True
        body.appendChild(self.error)

        self.output = el("div", "merge-output", data_testid="merge-output", data_status="empty")
        self.output_empty = el("div", "messages-empty", "Pick threads and a format, then Merge.")
        self.output.appendChild(self.output_empty)
        body.appendChild(self.output)
        self.note = el("div", "merge-note", data_testid="merge-note")
        self.note.hidden = True
        body.appendChild(self.note)

        done = el("div", "merge-done")
        self.copy_button = el("button", "merge-button", "Copy as Markdown", type="button", data_testid="merge-copy")
        self.download_button = el("button", "merge-button", "Download .md", type="button",
                                  data_testid="merge-download")
        self.keep_button = el("button", "merge-button merge-keep", "Keep in main thread", type="button",
                              data_testid="merge-keep")
        for button in (self.copy_button, self.download_button, self.keep_button):
            done.appendChild(button)
        body.appendChild(done)
        self.feedback = el("div", "merge-feedback", role="status", data_testid="merge-feedback")
        body.appendChild(self.feedback)
        self.node.appendChild(body)
        root.appendChild(self.node)

        self.listeners.add(self.close_button, "click", lambda e: self.close())
        self.listeners.add(self.picks, "change", self._on_pick)
        self.listeners.add(self.format, "change", lambda e: self.render())
        self.listeners.add(self.start_button, "click", lambda e: self.start())
        self.listeners.add(self.stop_button, "click", lambda e: self.stop())
        self.listeners.add(self.copy_button, "click", lambda e: self.actions.copy_merge(self.text()))
        self.listeners.add(self.download_button, "click",
                           lambda e: self.actions.download_merge(self.text(), self.thread_id))
        self.listeners.add(self.keep_button, "click", lambda e: self.keep())
        self.listeners.add(self.node, "keydown", self._on_key)

    # ---- open / close -----------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return not self.node.hidden

    def open(self, thread_id: int) -> None:
        if self.thread_id != thread_id:
            self._unbind()
            self.thread_id = thread_id
            self.key = merge_key(thread_id)
            self.store.subscribe(self.key, self._on_change)
            self.picked = {n.thread_id for n in tree.walk(tree.build(self.store, thread_id))}
            self.picks_shown = None
            if self.message_view is not None:
                self.message_view.node.remove()
                self.message_view = None
        if self.node.hidden:
            self.opener = document.activeElement
        self.node.hidden = False
        self.view.root.classList.add("merge-open")
        self.set_feedback("")
        self.render()
        self.start_button.focus()

    def close(self) -> None:
        self.node.hidden = True
        self.view.root.classList.remove("merge-open")
        self.view.tree_changed()
        if self.opener is not None and self.opener.isConnected:
            self.opener.focus()
        self.opener = None

    def _unbind(self) -> None:
        if self.key is not None:
            self.store.unsubscribe(self.key, self._on_change)

    def destroy(self) -> None:
        self._unbind()
        self.listeners.clear()
        self.node.remove()

    # ---- events -----------------------------------------------------------------------------------------------

    def _on_change(self, key, kind: str) -> None:
        self.view.schedule_merge()

    def _on_key(self, event) -> None:
        if event.key == "Escape":
            event.preventDefault()
            event.stopPropagation()
            state = self.store.get(self.key) if self.key else None
            if state is not None and state.streaming:
                self.stop()
            else:
                self.close()

    def _on_pick(self, event) -> None:
        box = closest(event.target, "input[data-testid=merge-pick]")
        if not box:
            return
        tid = int(box.dataset.threadId)
        if box.checked:
            self.picked.add(tid)
        else:
            self.picked.discard(tid)
        self.render()

    def start(self) -> None:
        if self.thread_id is None:
            return
        order = [n.thread_id for n in tree.walk(tree.build(self.store, self.thread_id))]
        chosen = [tid for tid in order if tid in self.picked]
        fmt = str(self.format.value)
        instruction = str(self.instruction.value).strip() if fmt == "custom" else ""
        if not chosen:
            self.store.set_error(self.key, {"code": "nothing_picked", "message": "Tick at least one thread."})
            return
        if fmt == "custom" and not instruction:
            self.store.set_error(self.key, {"code": "no_instruction",
                                            "message": "Write how the threads should be merged."})
            self.instruction.focus()
            return
        self.set_feedback("")
        self.actions.start_merge(self.key, self.thread_id, chosen, fmt, instruction or None)

    def stop(self) -> None:
        if self.key is not None:
            self.actions.stop(self.key)

    def keep(self) -> None:
        state = self.store.get(self.key) if self.key else None
        message = state.messages[-1] if state is not None and state.messages else None
        self.close()
        self.actions.keep_merge(self.thread_id, message.id if message is not None else None)

    def text(self) -> str:
        state = self.store.get(self.key) if self.key else None
        return state.messages[-1].text if state is not None and state.messages else ""

    def set_feedback(self, text: str, kind: str = "ok") -> None:
        self.feedback.textContent = text
        self.feedback.dataset.kind = kind

    # ---- rendering --------------------------------------------------------------------------------------------

    def render(self) -> None:
        if self.thread_id is None or not self.is_open:
            return
        state = self.store.get(self.key)
        streaming = bool(state is not None and state.streaming)
        self._render_picks(streaming)
        active = document.activeElement
        if not active or str(active.tagName) == "BODY":  # its focused button was disabled (Merge, then Stop)
            self.node.focus()
        custom = str(self.format.value) == "custom"
        self.instruction.hidden = not custom
        message = state.messages[-1] if state is not None and state.messages else None
        if message is not None:
            if self.message_view is None or self.message_view.key != message.key:
                if self.message_view is not None:
                    self.message_view.node.remove()
                self.message_view = MessageView(message)
                self.output.appendChild(self.message_view.node)
            self.message_view.render(message, [])
            self.output.dataset.status = message.status
        else:
            self.output.dataset.status = "empty"
        self.output_empty.hidden = message is not None
        error = state.error.get("message") if state is not None and state.error else None
        if error and message is not None and message.error is state.error:
            error = None  # shown under the write-up
        self.error.textContent = error or ""
        self.error.hidden = not error
        final = message is not None and not streaming and bool(message.text)
        saved = message is not None and message.id is not None
        if saved:
            note = ("Saved in the main thread as it streamed; closing this dialog does not remove it."
                    if not streaming else "Streaming; the main thread keeps what arrives, even if you stop.")
            if self.note.textContent != note:
                self.note.textContent = note
        self.note.hidden = not saved
        self.start_button.disabled = streaming or not self.picked
        self.start_button.textContent = "Merge again" if message is not None and not streaming else "Merge"
        self.stop_button.disabled = not streaming or bool(state.stopping)
        self.stop_button.hidden = not streaming
        self.format.disabled = streaming
        self.instruction.disabled = streaming
        for button in (self.copy_button, self.download_button):
            button.disabled = not final
        self.keep_button.disabled = not (final and saved)
        self.node.classList.toggle("is-streaming", streaming)
        if streaming:
            self.output.scrollTop = self.output.scrollHeight

    def _render_picks(self, streaming: bool) -> None:
        root = tree.build(self.store, self.thread_id)
        nodes = list(tree.walk(root))
        shown = (tuple((n.thread_id, n.depth, n.title) for n in nodes), tuple(sorted(self.picked)), streaming)
        if shown == self.picks_shown:
            return
        self.picks_shown = shown
        self.picks.textContent = ""
        for node in nodes:
            label = el("label", "merge-pick")
            label.style.setProperty("--depth", str(node.depth))
            box = el("input", None, type="checkbox", data_testid="merge-pick", data_thread_id=node.thread_id)
            box.checked = node.thread_id in self.picked
            box.disabled = streaming
            label.appendChild(box)
            label.appendChild(el("span", "tree-icon", "💬" if node.depth == 0 else "📌"))
            label.appendChild(el("span", "merge-pick-title", node.title))
            self.picks.appendChild(label)
