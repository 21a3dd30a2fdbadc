"""The conversation pane beside the chat: the tree of the open conversation (the main thread, its pins, theirs),
each node with a live streaming dot; the merge and export controls. And the hover card of a pin anchor.

The tree is redrawn only when what it shows changes (`tree.signature`), and at most once per animation frame
(View batches it). Clicks are delegated to one listener on the pane, so redrawing creates no proxies.

Test hooks: `data-testid` `tree`, `tree-node` (with `data-thread-id`, `data-depth`, `data-streaming`), `merge-open`,
`export-md`, `export-json`, `pin-preview`.
"""

from __future__ import annotations

import api
import dom
import tree
from dom import Listeners, closest, el

__all__ = ["TreePane", "PinPreview"]


class TreePane:
    def __init__(self, view) -> None:
        self.view = view
        self.store = view.store
        self.listeners = Listeners()
        self.shown: tuple | None = None
        self.node = el("aside", "tree-pane", aria_label="Conversation tree", data_testid="tree-pane")
        self.node.hidden = True
        head = el("div", "tree-head")
        head.appendChild(el("span", "tree-heading", "Conversation"))
        self.merge_button = el("button", "tree-action", "Merge…", type="button", data_testid="merge-open",
                               title="Merge threads of this conversation into one write-up")
        head.appendChild(self.merge_button)
        self.node.appendChild(head)
        self.list = el("nav", "tree", data_testid="tree", aria_label="Threads of this conversation")
        self.node.appendChild(self.list)
        foot = el("div", "tree-foot")
        foot.appendChild(el("span", "tree-foot-label", "Export"))
        self.export_md = el("a", "tree-export", "Markdown", data_testid="export-md", download="",
                            title="Download the whole conversation as Markdown")
        self.export_json = el("a", "tree-export", "JSON", data_testid="export-json", download="",
                              title="Download the whole conversation as JSON (it can be imported again)")
        foot.appendChild(self.export_md)
        foot.appendChild(self.export_json)
        self.node.appendChild(foot)
        self.listeners.add(self.list, "click", self._on_click)
        self.listeners.add(self.merge_button, "click", lambda e: view.open_merge())

    def _on_click(self, event) -> None:
        item = closest(event.target, ".tree-node")
        if item:
            self.view.actions.open_any(int(item.dataset.threadId))

    def render(self) -> bool:
        """Redraw if anything shown changed; True when it did."""
        main_id = self.view.main_id
        if main_id is None:
            self.node.hidden = True
            self.shown = None
            return False
        root = tree.build(self.store, main_id, self.view.actions.busy_threads())
        open_ids = tuple(self.view.panels)
        shown = (main_id, tree.signature(root), open_ids)
        if shown == self.shown:
            return False
        self.shown = shown
        self.node.hidden = False
        self.export_md.href = api.export_url(main_id, "md")
        self.export_json.href = api.export_url(main_id, "json")
        self.list.textContent = ""
        for node in tree.walk(root):
            item = el("button", "tree-node", type="button", data_testid="tree-node", data_thread_id=node.thread_id,
                      data_depth=node.depth, data_streaming="true" if node.streaming else "false",
                      title=node.title)
            item.style.setProperty("--depth", str(node.depth))
            item.appendChild(el("span", "tree-icon", "💬" if node.depth == 0 else "📌"))
            item.appendChild(el("span", "tree-title", node.title))
            dot = el("span", "tree-dot", title="answering")
            dot.hidden = not node.streaming
            item.appendChild(dot)
            if node.thread_id in self.view.panels:
                item.setAttribute("aria-current", "true")
            self.list.appendChild(item)
        return True

    def destroy(self) -> None:
        self.listeners.clear()
        self.node.remove()


class PinPreview:
    """The card shown while the pointer is over a highlighted anchor: the pin's title and the first lines of its
    first answer (text only). It asks the controller to load a pin it has not seen yet."""

    def __init__(self, view, root) -> None:
        self.view = view
        self.store = view.store
        self.pin_id: int | None = None
        self.mark = None
        self.listeners = Listeners()
        self.node = el("div", "pin-preview", role="tooltip", data_testid="pin-preview")
        self.node.hidden = True
        self.title = el("div", "pin-preview-title")
        self.body = el("div", "pin-preview-body")
        self.node.appendChild(self.title)
        self.node.appendChild(self.body)
        root.appendChild(self.node)
        self.listeners.add(view.workspace, "mouseover", self._on_over)
        self.listeners.add(view.workspace, "mouseout", self._on_out)
        self.listeners.add(view.workspace, "scroll", self._on_scroll, dom.options(capture=True, passive=True))

    def _on_over(self, event) -> None:
        mark = closest(event.target, "mark.pin-anchor")
        if not mark or (self.mark is not None and mark == self.mark):
            return
        self.show(mark)

    def _on_out(self, event) -> None:
        if self.mark is None:
            return
        related = event.relatedTarget
        if related and self.mark.contains(related):
            return
        if closest(event.target, "mark.pin-anchor"):
            self.hide()

    def _on_scroll(self, event) -> None:
        if self.mark is None:
            return
        if self.mark.isConnected:
            self.place()
        else:
            self.hide()

    def show(self, mark) -> None:
        self.mark = mark
        self.pin_id = int(mark.dataset.pinId)
        self.render()
        self.node.hidden = False
        self.place()

    def place(self) -> None:
        """Just below the anchor (above it near the bottom of the window), inside the window."""
        rect = self.mark.getBoundingClientRect()
        width = self.node.offsetWidth
        _, _, window_width, window_height = dom.window_box()
        left = max(8, min(rect.left, window_width - width - 8))
        top = rect.bottom + 6
        if top + self.node.offsetHeight > window_height - 8:
            top = max(8, rect.top - self.node.offsetHeight - 6)
        self.node.style.left = f"{left}px"
        self.node.style.top = f"{top}px"

    def render(self) -> None:
        if self.pin_id is None:
            return
        title = tree.label(self.store, self.pin_id)
        text = tree.preview(self.store, self.pin_id)
        if text is None:
            text = "Loading…"
            self.view.actions.preload(self.pin_id)
        elif not text:
            text = "No answer yet. Click to open this pin."
        if self.title.textContent != title:
            self.title.textContent = title
        if self.body.textContent != text:
            self.body.textContent = text
        self.node.dataset.pinId = str(self.pin_id)

    def hide(self) -> None:
        self.mark = None
        self.pin_id = None
        self.node.hidden = True

    def destroy(self) -> None:
        self.listeners.clear()
        self.node.remove()
