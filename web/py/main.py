"""The app's controller: wires the store, the streams (api.py) and the view, and turns user intents into API calls.

index.html runs `await main.start()` once Pyodide is up. The URL hash remembers what is open (`#t=<thread>&p=<pin>,
<pin>`), so a reload shows the same thread and pin panels, with their history from the server.
"""

from __future__ import annotations

import asyncio

import js

import api
from api import ApiError, Streams
from store import Store
from view import Listeners, View

__all__ = ["App", "start"]

APP: App | None = None
RETRY_S = 3.0
WATCH_S = 1.0
TITLE_DELAY_S = 4.0


class App:
    def __init__(self, root) -> None:
        self.store = Store()
        self.streams = Streams(self.store, on_end=self._on_stream_end)
        self.view = View(self.store, self, root)
        self.tasks: set[asyncio.Task] = set()  # strong references: asyncio keeps tasks only weakly
        self.listeners = Listeners()
        self.listeners.add(js.window, "pagehide", self._on_pagehide)
        self._watching: set[int] = set()

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            js.console.error(f"pinchat: {exc!r}")
            self.view.show_global_error(f"Something went wrong: {exc}")

    # ---- start ------------------------------------------------------------------------------------------------

    async def boot(self) -> None:
        hash_state = parse_hash(str(js.location.hash))
        if not await self.refresh_list():
            self.spawn(self._retry_list())
        main_id = hash_state.get("t")
        if main_id is None and self.store.thread_list:
            main_id = self.store.thread_list[0]["id"]
        if main_id is not None:
            self.open_thread(main_id, pins=hash_state.get("p", []))

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
        self.spawn(self._new_thread())

    async def _new_thread(self) -> None:
        try:
            thread = await api.create_thread()
        except ApiError as exc:
            self.view.show_global_error(f"Could not create a thread: {exc.message}")
            return
        self.view.show_global_error(None)
        self.store.set_info(thread)
        state = self.store.thread(thread["id"])
        state.loaded = True
        self.store.upsert_listed_thread(thread)
        self.open_thread(thread["id"], load=False)
        self.view.panels[thread["id"]].focus()

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
        try:
            detail = await api.get_thread(thread_id)
        except ApiError as exc:
            if exc.status == 404:
                self.store.remove_thread(thread_id)
                if self.view.main_id == thread_id:
                    self.view.show_thread(None)
                else:
                    self.view.close_pin(thread_id)
                self._save_hash()
                self.view.show_global_error(f"Thread {thread_id} no longer exists.")
            else:
                self.store.set_error(thread_id, exc.as_dict())
            return
        self.store.load_thread(detail)
        if detail.get("streaming") and not self.streams.is_live(thread_id) and thread_id not in self._watching:
            self.spawn(self._watch(thread_id))  # answering for another tab: follow it until it ends

    async def _watch(self, thread_id: int) -> None:
        self._watching.add(thread_id)
        try:
            while thread_id in self.view.panels and not self.streams.is_live(thread_id):
                await asyncio.sleep(WATCH_S)
                detail = await api.get_thread(thread_id)
                self.store.load_thread(detail)
                if not detail.get("streaming"):
                    break
        except ApiError:
            pass
        finally:
            self._watching.discard(thread_id)

    def send(self, thread_id: int, text: str) -> bool:
        return self.streams.start(thread_id, text)

    def stop(self, thread_id: int) -> None:
        self.streams.stop(thread_id)

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

    def open_pin(self, pin_id: int, parent_id: int | None = None) -> None:
        state = self.store.get(pin_id)
        self.view.open_pin(pin_id).focus()
        if state is None or not state.loaded:
            self.spawn(self._load(pin_id))
        self._save_hash()

    def close_pin(self, pin_id: int) -> None:
        self.view.close_pin(pin_id)
        self._save_hash()

    # ---- stream ends, page hide -------------------------------------------------------------------------------

    def _on_stream_end(self, thread_id: int, outcome: str) -> None:
        self.spawn(self._refresh_after_answer())

    async def _refresh_after_answer(self) -> None:
        """The list's order and "answering" dots change now; the server titles a new thread in the background."""
        await self.refresh_list()
        await asyncio.sleep(TITLE_DELAY_S)
        await self.refresh_list()

    def _on_pagehide(self, event) -> None:
        for thread_id in list(self.streams.live):
            js.navigator.sendBeacon(f"/api/threads/{thread_id}/cancel")
        self.streams.abort_all()

    def _save_hash(self) -> None:
        parts = []
        if self.view.main_id is not None:
            parts.append(f"t={self.view.main_id}")
        if self.view.pin_ids:
            parts.append("p=" + ",".join(str(p) for p in self.view.pin_ids))
        new = "#" + "&".join(parts) if parts else ""
        if str(js.location.hash) != new:
            js.history.replaceState(None, "", new or str(js.location.pathname))


def parse_hash(value: str) -> dict:
    """`#t=3&p=5,6` -> {"t": 3, "p": [5, 6]}; anything malformed is ignored."""
    out: dict = {}
    for part in value.lstrip("#").split("&"):
        key, _, raw = part.partition("=")
        try:
            if key == "t":
                out["t"] = int(raw)
            elif key == "p":
                out["p"] = [int(x) for x in raw.split(",") if x]
        except ValueError:
            continue
    return out


async def start() -> App:
    global APP
    APP = App(js.document.getElementById("app"))
    js.window.pinchat_ready = True
    await APP.boot()
    return APP
