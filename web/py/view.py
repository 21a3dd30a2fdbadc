"""The page's app view: the sidebar (threads, new, import, delete), the workspace of thread panels (the main thread
and its pin panels, thread_panel.py, or the draft of a new thread, draft.py), the conversation pane and anchor hover card (tree_view.py), the merge dialog
(merge_view.py) and the pin button over a selected passage (pin_selection.py).

Rendering is batched: a store notification only marks a panel dirty and asks for one animation frame; the frame
renders each dirty panel once, however many tokens arrived since the last one. The tree, the hover card and the
merge dialog redraw on the same frame, from `Store.subscribe_any` notifications.

The view calls back into `actions` (see main.py) for everything that talks to the server; it never fetches. The
panes are handed this View and call back through it (never by importing this module). Handlers are kept in
`dom.Listeners` registries and removed on teardown.

Test hooks: `data-testid` `new-thread`, `import`, `delete-thread`, `pin`, `global-error` (and those of the panes).
"""

from __future__ import annotations

import dom
import tree
from dom import Listeners, closest, document, el
from draft import DraftPanel
from merge_view import MergeDialog
from pin_selection import PinSelection
from store import Store
from thread_panel import ThreadPanel
from tree_view import PinPreview, TreePane

__all__ = ["View"]


class View:
    """The whole page. `actions` is the controller (main.App) the view reports user intents to."""

    def __init__(self, store: Store, actions, root, after_frame=None) -> None:
        """`after_frame()` is called after each frame drawn (main: the heap's freezes, heap.py)."""
        self.store = store
        self.after_frame = after_frame
        self.actions = actions
        self.root = root
        self.listeners = Listeners()
        self.panels: dict[int, ThreadPanel] = {}
        self.main_id: int | None = None
        self.draft: DraftPanel | None = None  # the main panel when it shows a thread not created yet
        self.pin_ids: list[int] = []
        self._dirty: set = set()
        self._frame_pending = False
        self._sidebar_dirty = False
        self.frames = 0
        self._tree_dirty = False
        self._merge_dirty = False
        self.confirm_delete: int | None = None  # the thread whose delete button asks "Delete?"

        self.sidebar = el("aside", "sidebar")
        head = el("div", "sidebar-head")
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
        self.workspace = el("main", "workspace")  # a CSS container: the panes' layout follows its width
        self.panes = el("div", "panes")
        self.workspace.appendChild(self.panes)
        self.placeholder = el("div", "workspace-empty", "Start a new thread, or pick one on the left.")
        self.panes.appendChild(self.placeholder)
        self.pin_stack = el("div", "pin-stack")  # beside the main panel, or under it when the workspace is narrow
        self.panes.appendChild(self.pin_stack)
        self.tree_pane = TreePane(self)
        root.appendChild(self.sidebar)
        root.appendChild(self.tree_pane.node)
        root.appendChild(self.workspace)
        self.pin_selection = PinSelection(self, root)
        self.preview = PinPreview(self, root)
        self.merge = MergeDialog(self, root)

        self.listeners.add(self.new_button, "click", lambda e: actions.new_thread())
        self.listeners.add(self.thread_list, "click", self._on_thread_click)
        self.listeners.add(self.import_input, "change", self._on_import)
        self.listeners.add(document, "keydown", self._on_global_key)
        self.listeners.add(document, "click", self._on_md_click)
        store.subscribe_list(self._on_list_change)
        store.subscribe_any(self._on_any_change)
        self.render_sidebar()

    # ---- batching ---------------------------------------------------------------------------------------------

    def schedule(self, panel=None) -> None:
        if panel is not None:
            self._dirty.add(panel)
        if not self._frame_pending:
            self._frame_pending = True
            dom.next_frame(self._frame)

    def _frame(self, _timestamp=None) -> None:
        self._frame_pending = False
        self.frames += 1
        dirty, self._dirty = self._dirty, set()
        panels = [panel for panel in dirty if self.panels.get(panel.thread_id) is panel]
        # Layout is read for all panels first, then the DOM is changed, then scrolled: one page layout per
        # frame instead of one per panel (reading scrollHeight after another panel's change forces a layout).
        follow = [panel.near_bottom() for panel in panels]
        follow = [panel.render(stick) for panel, stick in zip(panels, follow)]
        for panel, stick in zip(panels, follow):
            if stick:
                panel.follow_end()
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
        if self.after_frame is not None:
            self.after_frame()

    def rerender(self) -> None:
        """Render every open panel and the merge dialog again at the next frame (e.g. once the Markdown renderer
        is loaded)."""
        self._dirty.update(self.panels.values())
        self._merge_dirty = True
        self.schedule()

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
        focused = document.activeElement
        refocus = None  # the rebuilt list keeps the keyboard where it was (a delete confirmed with a second Enter)
        if focused and self.thread_list.contains(focused) and focused.dataset.threadId:
            refocus = f'.{str(focused.classList.item(0))}[data-thread-id="{int(focused.dataset.threadId)}"]'
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
        again = self.thread_list.querySelector(refocus) if refocus else None
        if again:
            again.focus()

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
        dom.scroll_into_view(panel.node, block="nearest", inline="nearest")

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
        dom.scroll_into_view(node, block="nearest")
        return True

    def show_global_error(self, message: str | None) -> None:
        self.global_error.textContent = message or ""
        self.global_error.hidden = not message

    # ---- panels -----------------------------------------------------------------------------------------------

    def show_draft(self) -> DraftPanel:
        """Make the main panel a draft (the one shown already, if any, with its text)."""
        if self.draft is None:
            self.show_thread(None)
            self.draft = DraftPanel(self)
            self.placeholder.hidden = True
            self.panes.insertBefore(self.draft.node, self.panes.firstChild)
        return self.draft

    def show_thread(self, thread_id: int | None) -> None:
        """Make `thread_id` the main panel; pin panels of the previous thread close (their streams go on)."""
        if self.draft is not None:
            self.draft.destroy()
            self.draft = None
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
            self.panes.insertBefore(panel.node, self.panes.firstChild)
        self._sidebar_dirty = True
        self.schedule()
        self._sync_layout()

    def open_pin(self, pin_id: int) -> ThreadPanel:
        panel = self.panels.get(pin_id)
        if panel is None:
            panel = self.panels[pin_id] = ThreadPanel(self, pin_id, is_pin=True)
            self.pin_ids.append(pin_id)
            self.pin_stack.appendChild(panel.node)
            self._sync_layout()
        self.flash(pin_id)
        return panel

    def close_pin(self, pin_id: int) -> None:
        panel = self.panels.pop(pin_id, None)
        if panel is not None:
            had_focus = panel.node.contains(document.activeElement)
            panel.destroy()
            main = self.panels.get(self.main_id)
            if had_focus and main is not None:  # else the keyboard falls to the page's body
                main.focus()
        if pin_id in self.pin_ids:
            self.pin_ids.remove(pin_id)
        self._sync_layout()

    def _sync_layout(self) -> None:
        self.panes.dataset.pins = str(len(self.pin_ids))
        self.tree_changed()  # which nodes are open

    def panel_of(self, node) -> ThreadPanel | None:
        section = closest(node, "section.panel[data-thread-id]")
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

    def _on_md_click(self, event) -> None:
        """Rendered Markdown's buttons: a code block's Copy, an image placeholder (the image loads only now)."""
        button = closest(event.target, ".md button")
        if not button:
            return
        if button.classList.contains("code-copy"):
            code = closest(button, ".code-block").querySelector("pre")
            dom.copy_text(str(code.textContent) if code else "", lambda ok: self._copied(button, ok))
        elif button.classList.contains("img-placeholder"):
            image = el("img", "md-image", src=str(button.dataset.src), alt=str(button.dataset.alt or ""),
                       referrerpolicy="no-referrer")
            failed = el("span", "img-failed", f"Image from {button.dataset.host} could not be loaded")
            self.listeners.add(image, "error", lambda e: image.replaceWith(failed))  # refused by CSP, 404, not an image
            button.replaceWith(image)

    @staticmethod
    def _copied(button, ok: bool) -> None:
        button.textContent = "Copied" if ok else "Copy failed"
        dom.after(1500, lambda: setattr(button, "textContent", "Copy"))

    def destroy(self) -> None:
        if self.draft is not None:
            self.draft.destroy()
            self.draft = None
        for tid in list(self.panels):
            self.panels.pop(tid).destroy()
        self.store.unsubscribe_list(self._on_list_change)
        self.store.unsubscribe_any(self._on_any_change)
        self.tree_pane.destroy()
        self.pin_selection.destroy()
        self.preview.destroy()
        self.merge.destroy()
        self.listeners.clear()

