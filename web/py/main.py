"""The entry point and the app's controller: wires the store, the streams (streams.py over api.Transport) and the
view, and turns user intents into API calls.

Besides chat and pins it loads the whole tree of the open conversation (every pin's detail, for the tree, the
breadcrumbs and the anchor hover cards), refreshes a thread's info a few times after an answer (the server writes
titles, summaries and a pin's generated starter questions in the background), and runs merge, copy/download,
export/import and delete for the view.

boot.js runs `await main.start()` once Pyodide is up; the shell (shell.py) asks who is signed in and builds an `App`
for them (`main.APP`), or shows the sign-in form. The URL hash remembers what is open (`#t=<thread>&p=<pin>,<pin>`),
so a reload shows the same thread and pin panels, with their history from the server; a hash set from outside (a
pasted link, back / forward) opens what it names. The page opens ready to type: the thread the hash names, else
the most recent one, else a draft (draft.py), whose first message creates the thread.
"""

from __future__ import annotations

import asyncio

import api
import dom
import heap
import renderer_install
import tree
from contract import ApiError, merge_thread
from dom import Listeners, Tasks
from navigation import format_hash, parse_hash, pin_changes
from shell import Shell
from store import Store
from streams import Streams
from unsent import NEW, Unsent
from view import View

__all__ = ["App", "start"]

APP: App | None = None
RETRY_S = 3.0
# After an answer the server writes a title and a summary in the background (and a new pin gets its generated
# starter questions): look again after these delays, so they show without a reload.
REFRESH_DELAYS_S = (0.0, 1.0, 3.0)
HEAP = heap.Heap(dom.after)  # the page's one cycle-collector policy, whoever is signed in


class App:
    def __init__(self, root, user_id: int) -> None:
        self.store = Store()
        self.unsent = Unsent(dom.TabStorage(), user_id)  # the composers' text across a reload
        self.streams = Streams(self.store, api.Transport(), on_end=self._on_stream_end,
                               on_unauthenticated=api.report_unauthenticated)
        self.view = View(self.store, self, root, after_frame=HEAP.after_frame)
        self.tasks = Tasks(on_error=lambda exc: self.view.show_global_error(f"Something went wrong: {exc}"))
        self.listeners = Listeners()
        self.listeners.add(dom.window, "pagehide", self._on_pagehide)
        self.listeners.add(dom.window, "hashchange", self._on_hashchange)
        self._loading: set[int] = set()

    def spawn(self, coro) -> asyncio.Task:
        return self.tasks.spawn(coro)

    # ---- start ------------------------------------------------------------------------------------------------

    async def boot(self) -> None:
        hash_state = parse_hash(api.location_hash())
        if not await self.refresh_list():
            self.spawn(self._retry_list())
        main_id = hash_state.get("t")
        if main_id is None and self.store.thread_list and not self.unsent.load(NEW):  # else the draft being written
            main_id = self.store.thread_list[0]["id"]
        if main_id is None:
            self.show_draft()
        else:
            self.open_thread(main_id, pins=hash_state.get("p", []))
            self.view.panels[main_id].focus()

    async def refresh_list(self) -> bool:
        try:
            self.store.set_thread_list(await api.list_threads())
        except ApiError as exc:
            self.view.show_global_error(
                "Cannot reach the server; retrying…" if exc.status == 0 else f"The server failed: {exc.message}")
            return False
        self.view.show_global_error(None)
        return True

    async def _retry_list(self) -> None:
        while not await self.refresh_list():
            await asyncio.sleep(RETRY_S)

    # ---- actions (called by the view) -------------------------------------------------------------------------

    def new_thread(self) -> None:
        """"+ New thread": a draft, so that a thread exists only once it has a message."""
        self.show_draft()
        # another tab may have changed the list; and a session that ended shows now, not after a message is typed
        self.spawn(self.refresh_list())

    def show_draft(self) -> None:
        self.view.show_draft().focus()
        self._save_hash()

    def create_with(self, text: str) -> None:
        """The draft's first message: create the thread, then send the message in it as in any thread."""
        self.spawn(self._create_with(self.view.draft, text))

    async def _create_with(self, draft, text: str) -> None:
        try:
            thread = await api.create_thread()
        except ApiError as exc:
            if self.view.draft is draft:
                draft.failed(f"Could not start the thread: {exc.message}")
            else:
                self.view.show_global_error(f"Could not start a thread: {exc.message}")
            return
        self.view.show_global_error(None)
        thread_id = thread["id"]
        self.store.set_info(thread)
        self.store.thread(thread_id).loaded = True
        self.store.upsert_listed_thread(thread)
        started = self.streams.start(thread_id, text)
        if self.view.draft is not draft:  # the user went elsewhere meanwhile: the thread answers in the list
            return
        self.open_thread(thread_id, load=False)
        panel = self.view.panels[thread_id]
        if not started:  # refused here (too many answers streaming): its reason shows, the text stays
            panel.input.value = text
            self.unsent.save(thread_id, text)
        panel.focus()

    def busy_threads(self) -> set[int]:
        return self.streams.busy_threads()

    def in_open_tree(self, thread_id: int) -> bool:
        return self.view.main_id is not None and tree.path(self.store, thread_id)[0] == self.view.main_id

    def open_any(self, thread_id: int) -> None:
        """A tree node or a breadcrumb: the main thread is shown already (bring it into view), a pin opens."""
        if thread_id == self.view.main_id:
            self.view.flash(thread_id)
            self.view.panels[thread_id].focus()
        else:
            self.open_pin(thread_id)

    def preload(self, thread_id: int) -> None:
        """Load a thread in the background (the hover card of a pin not opened yet)."""
        state = self.store.get(thread_id)
        if (state is None or not state.loaded) and thread_id not in self._loading:
            self.spawn(self._load(thread_id))

    def open_thread(self, thread_id: int, pins: list[int] = (), load: bool = True) -> None:
        if thread_id == self.view.main_id and not pins:  # already shown: keep its pin panels, refresh it
            self.spawn(self._load(thread_id))
            return
        self.view.show_thread(thread_id)
        if load:
            self.spawn(self._load(thread_id))
        for pin_id in pins:
            self.view.open_pin(pin_id)
            self.spawn(self._load(pin_id))
        self._save_hash()

    async def _load(self, thread_id: int) -> None:
        """Load a thread (messages, pins), then the pins of the open conversation not loaded yet: the tree."""
        self._loading.add(thread_id)
        try:
            detail = await api.get_thread(thread_id)
        except ApiError as exc:
            self._loading.discard(thread_id)
            if exc.status == 404:
                self.store.remove_thread(thread_id)
                if self.view.main_id == thread_id:
                    self.view.show_draft()  # the address still names it: a reload says again that it is gone
                else:
                    self.view.close_pin(thread_id)
                    self._save_hash()
                self.view.show_global_error(f"Thread {thread_id} no longer exists.")
            else:
                self.store.set_error(thread_id, exc.as_dict())
            return
        self._loading.discard(thread_id)
        self.store.load_thread(detail)
        self._follow(detail)

    def _follow(self, detail: dict) -> None:
        """After a snapshot: load the pins of the open tree we have not seen; an answer being written (before a
        reload, by another tab) is shown from the snapshot and followed live from the event it ends at."""
        thread_id = detail["id"]
        if not self.in_open_tree(thread_id):
            return
        for pin in detail.get("pins") or ():
            self.preload(pin["id"])
        event_id = detail.get("stream_event_id")
        if (not detail.get("streaming") or not event_id or thread_id not in self.view.panels
                or thread_id in self.streams.busy_threads()):
            return  # a pin shown in no panel is followed when its panel opens
        # only an answer whose snapshot the panel shows (a snapshot taken without messages leaves it alone, and
        # the messages this page shows, e.g. a question refused with 409, stay as they are)
        self.streams.follow(thread_id, thread_id, str(event_id))

    def send(self, thread_id: int, text: str) -> bool:
        return self.streams.start(thread_id, text)

    def stop(self, key) -> None:
        """Stop the stream of a thread, or of a merge (its merge key)."""
        self.streams.stop(key)

    def pin(self, parent_id: int, message_id: int, start: int, end: int) -> None:
        self.spawn(self._pin(parent_id, message_id, start, end))

    async def _pin(self, parent_id: int, message_id: int, start: int, end: int) -> None:
        try:
            pin = await api.create_thread(parent_id=parent_id,
                                          anchor={"message_id": message_id, "start": start, "end": end})
        except ApiError as exc:
            self.store.set_error(parent_id, {"code": exc.code, "message": f"Could not pin: {exc.message}"})
            return
        self.store.add_pin(parent_id, pin)
        self.view.open_pin(pin["id"]).focus()
        self._save_hash()
        self.spawn(self._refresh_info(pin["id"], REFRESH_DELAYS_S[1:]))  # the generated starter questions

    def open_pin(self, pin_id: int, parent_id: int | None = None) -> None:
        self.view.open_pin(pin_id).focus()
        state = self.store.get(pin_id)
        if state is not None and state.loaded and state.info.get("streaming") and not state.streaming:
            self.spawn(self._load(pin_id))  # being written (another tab): show it from now and follow it
        else:
            self.preload(pin_id)
        self._save_hash()

    def close_pin(self, pin_id: int) -> None:
        self.view.close_pin(pin_id)
        self._save_hash()

    # ---- stream ends, page hide -------------------------------------------------------------------------------

    def _on_stream_end(self, key, outcome: str) -> None:
        merged_into = merge_thread(key)
        if merged_into is not None:  # a merge: its message is now in that thread
            self.spawn(self._reload_messages(merged_into))
            self.spawn(self.refresh_list())
            return
        question = self.store.refused_question(key)
        if question is not None:
            panel = self.view.panels.get(key)
            if panel is not None:
                panel.give_back(question)
            why = self.store.thread(key).error
            if (why or {}).get("code") == "thread_busy":
                self.spawn(self._show_running_answer(key, why))
                return
        self.spawn(self._refresh_info(key, REFRESH_DELAYS_S, with_list=True))

    async def _reload_messages(self, thread_id: int) -> dict | None:
        try:
            detail = await api.get_thread(thread_id)
        except ApiError:
            return None
        self.store.load_thread(detail)
        return detail

    async def _show_running_answer(self, thread_id: int, why: dict) -> None:
        """Another tab or client answers in this thread (ours was refused with 409): show its question and follow
        its answer, saying meanwhile why ours was not sent (it is back in the composer)."""
        detail = await self._reload_messages(thread_id)
        if detail is not None:
            self._follow(detail)
            self.store.set_error(thread_id, why)

    async def _refresh_info(self, thread_id: int, delays, with_list: bool = False) -> None:
        """Take the thread's title, summary and starter questions (and the list's order and titles) again after
        each delay: the server writes them in the background. The messages shown are not replaced."""
        for delay in delays:
            if delay:
                await asyncio.sleep(delay)
            if with_list:
                await self.refresh_list()
            if self.store.get(thread_id) is None:
                return
            try:
                detail = await api.get_thread(thread_id)
            except ApiError:
                return
            self.store.load_thread(detail, messages=False)
            self._follow(detail)

    # ---- merge, export / import, delete -----------------------------------------------------------------------

    def start_merge(self, key: str, thread_id: int, threads: list[int], fmt: str, instruction: str | None) -> bool:
        return self.streams.start_merge(key, thread_id, threads, fmt, instruction)

    def copy_merge(self, text: str) -> None:
        self.spawn(self._copy(text))

    async def _copy(self, text: str) -> None:
        try:
            await api.copy_text(text)
        except ApiError as exc:
            self.view.merge.set_feedback(f"{exc.message} Select the text above and copy it by hand.", "error")
            return
        self.view.merge.set_feedback("Copied as Markdown.")

    def download_merge(self, text: str, thread_id: int | None) -> None:
        name = f"merge-{thread_id}.md" if thread_id is not None else "merge.md"
        self.spawn(api.download_text(text if text.endswith("\n") else text + "\n", name))
        self.view.merge.set_feedback(f"Downloading {name}.")

    def keep_merge(self, thread_id: int | None, message_id: int | None) -> None:
        if thread_id is None:
            return
        if thread_id != self.view.main_id:
            self.open_thread(thread_id)
        self.spawn(self._keep(thread_id, message_id))

    async def _keep(self, thread_id: int, message_id: int | None) -> None:
        await self._reload_messages(thread_id)
        if message_id is None:
            return
        for _ in range(20):  # the panel draws on the next animation frame
            if self.view.show_message(thread_id, message_id):
                return
            await asyncio.sleep(0.05)

    def import_file(self, file) -> None:
        self.spawn(self._import(file))

    async def _import(self, file) -> None:
        try:
            thread = await api.import_conversation(await api.read_file(file))
        except ApiError as exc:
            self.view.show_global_error(f"Could not import {file.name}: {exc.message}")
            return
        self.view.show_global_error(None)
        self.store.upsert_listed_thread(thread)
        self.open_thread(thread["id"])

    def delete_thread(self, thread_id: int) -> None:
        self.spawn(self._delete(thread_id))

    async def _delete(self, thread_id: int) -> None:
        try:
            await api.delete_thread(thread_id)
        except ApiError as exc:
            if exc.status != 404:
                self.view.show_global_error(f"Could not delete: {exc.message}")
                return
        self.view.show_global_error(None)
        was_open = self.view.main_id == thread_id or thread_id in self.view.pin_ids
        for tid in self.store.subtree_ids(thread_id):
            if tid in self.view.pin_ids:
                self.view.close_pin(tid)
        self.store.remove_thread(thread_id)
        if self.view.main_id == thread_id:
            if self.store.thread_list:
                self.open_thread(self.store.thread_list[0]["id"])
            else:
                self.view.show_draft()
        if was_open:
            self._save_hash()
        await self.refresh_list()

    def _on_hashchange(self, event) -> None:
        """A pasted link, back or forward (the page's own updates replace the hash and fire nothing)."""
        value = api.location_hash()
        wanted = parse_hash(value)
        main_id, pins = wanted.get("t"), wanted.get("p", [])
        if main_id is None:
            if not value.lstrip("#"):
                self.show_draft()
            return
        if main_id != self.view.main_id:
            if not any(info["id"] == main_id for info in self.store.thread_list):
                self.spawn(self.refresh_list())  # a link to a thread made elsewhere since the list was read
            self.open_thread(main_id, pins=pins)
            self.view.panels[main_id].focus()
            return
        closing, opening = pin_changes(self.view.pin_ids, pins)
        for pin_id in closing:
            self.view.close_pin(pin_id)
        for pin_id in opening:
            self.open_pin(pin_id)
        self._save_hash()

    def _on_pagehide(self, event) -> None:
        self.streams.abort_all()  # no cancel: the server keeps the answers for a reload or another tab

    def destroy(self) -> None:
        """Signed out (or the session ended): stop every stream and task, remove the app's DOM and listeners."""
        self.streams.on_end = None  # the aborted streams must not start reloads of a page that is gone
        self.streams.abort_all()
        self.tasks.cancel_all()
        self.listeners.clear()
        self.view.destroy()

    def _save_hash(self) -> None:
        api.replace_location(format_hash(self.view.main_id, self.view.pin_ids))


async def install_renderer() -> None:
    """Called by boot.js once the page is usable and the renderer's wheels are unpacked (renderer_install.py)."""
    await renderer_install.install(lambda: APP.view.rerender() if APP is not None else None)


def set_app(app: App | None) -> None:
    """The shell's record of the running App (None while signed out); `main.APP` is a handle for tests."""
    global APP
    APP = app


async def start():
    shell = Shell(dom.by_id("app"), App, set_app)
    dom.window.pinchat_ready = True
    await shell.start()
    return shell
