"""Who is signed in, and what the page shows for it: the sign-in form, or the app under a small top bar (the user's
name, Account, Users for admins, Sign out).

On start it asks GET /api/auth/me: 401 -> the sign-in form (with a note when the address is `#signin-expired`, where
the server sends a used or expired sign-in link); 200 -> an `App` (main.py) for that user. A 401 from any later API
call (the session was revoked, the user disabled, the password reset elsewhere) tears the App down and shows the
form again; so does Sign out. Coming back to the tab checks the session too, so a revoked one shows at once.

`<html data-auth="signed-in|signed-out|checking" data-user="name">` tells the tests (and CSS) which it is.

Test hooks (`data-testid`): `topbar`, `topbar-user`, `account-open`, `users-open`, `signout`.
"""

from __future__ import annotations

import asyncio

import accounts
import api
import dom
from account_view import AccountPanel
from contract import ApiError
from dom import Listeners, Tasks, el
from signin_view import SignInView
from unsent import forget_all
from users_view import UsersPanel

__all__ = ["Shell"]

RETRY_S = 3.0
SESSION_ENDED = "Your session has ended (signed out elsewhere, or your account was changed). Sign in again."


class Shell:
    def __init__(self, root, app_class, set_app) -> None:
        self.root = root
        self.app_class = app_class
        self.set_app = set_app
        self.me: dict | None = None
        self.app = None
        self.signin: SignInView | None = None
        self.body = None
        self.topbar = None
        self.account: AccountPanel | None = None
        self.users: UsersPanel | None = None
        self.bar_listeners = Listeners()
        self.listeners = Listeners()
        self.tasks = Tasks()
        self.html = dom.document.documentElement
        self.listeners.add(dom.document, "visibilitychange", self._on_visible)
        api.on_unauthenticated(self._on_unauthenticated)

    @property
    def user(self) -> dict | None:
        return (self.me or {}).get("user")

    def set_user(self, user: dict) -> None:
        if self.me is not None and user:
            self.me = {**self.me, "user": user}
            self._render_user()

    def spawn(self, coro) -> asyncio.Task:
        return self.tasks.spawn(coro)

    # ---- start ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.html.dataset.auth = "checking"
        me = await self._who()
        if me is not None:
            await self.enter(me)

    async def _who(self) -> dict | None:
        """GET /api/auth/me; None (and the sign-in form, or a retry loop while the server is down) if nobody."""
        try:
            return await api.me()
        except ApiError as exc:
            if exc.status == 401:
                self.show_signin()
            else:
                self.show_signin(error=exc.message if exc.status == 0 else f"The server failed: {exc.message}")
                self.spawn(self._retry_who())
            return None

    async def _retry_who(self) -> None:
        while self.app is None:
            await asyncio.sleep(RETRY_S)
            if self.app is not None:
                return
            try:
                me = await api.me()
            except ApiError as exc:
                if exc.status not in (0,) and exc.status < 500:
                    if self.signin is not None:
                        self.signin.set_error(None)
                    return
                continue
            await self.enter(me)
            return

    # ---- signed out -----------------------------------------------------------------------------------------

    def show_signin(self, *, error: str | None = None) -> None:
        self._leave()
        origin = api.page_origin()
        note = accounts.expired_note(origin) if accounts.signin_expired(api.location_hash()) else None
        self.signin = SignInView(self.root, self._on_signin, hint=accounts.signin_hint(origin), note=note,
                                 error=error)
        self.html.dataset.auth = "signed-out"
        self.html.removeAttribute("data-user")
        dom.set_title("Sign in · pinchat")
        self.signin.focus()

    def _on_signin(self, username: str, password: str) -> None:
        self.signin.set_busy(True)
        self.spawn(self._login(username, password))

    async def _login(self, username: str, password: str) -> None:
        try:
            await api.login(username, password)
            me = await api.me()
        except ApiError as exc:
            if self.signin is not None:
                self.signin.failed(accounts.signin_error(exc.status, exc.code, exc.message, exc.retry_after))
            return
        if accounts.signin_expired(api.location_hash()):
            api.clear_location()
        await self.enter(me)

    def _on_unauthenticated(self, error: ApiError) -> None:
        """A 401 from an API call: the session is gone. Leave the app (after the failing call has unwound)."""
        if self.app is not None:
            asyncio.get_event_loop().call_soon(self._session_ended)

    def _session_ended(self) -> None:
        if self.app is not None:
            self.show_signin(error=SESSION_ENDED)

    def _on_visible(self, event) -> None:
        if dom.page_visible() and self.app is not None:
            self.spawn(self._check_session())

    async def _check_session(self) -> None:
        try:
            await api.me()
        except ApiError as exc:
            if exc.status == 401 and self.app is not None:
                self.show_signin(error=SESSION_ENDED)

    # ---- signed in ------------------------------------------------------------------------------------------

    async def enter(self, me: dict) -> None:
        """Show the app for the signed-in user `me` ({"user", "auth", "sso"})."""
        self._leave()
        self.me = me
        self.topbar = self._build_topbar()
        self.root.appendChild(self.topbar)
        self.body = el("div", "app-body")
        self.root.appendChild(self.body)
        self.account = AccountPanel(self, self.root)
        self.users = UsersPanel(self, self.root)
        self._render_user()
        self.html.dataset.auth = "signed-in"
        dom.set_title("pinchat")
        self.app = self.app_class(self.body, me["user"]["id"])
        self.set_app(self.app)
        await self.app.boot()

    def _build_topbar(self):
        bar = el("header", "topbar", data_testid="topbar")
        bar.appendChild(el("div", "brand", "pinchat"))
        bar.appendChild(el("div", "topbar-space"))
        self.user_label = el("span", "topbar-user", data_testid="topbar-user")
        bar.appendChild(self.user_label)
        self.account_button = el("button", "topbar-button", "Account", type="button", data_testid="account-open",
                                 title="Your password and API tokens")
        self.users_button = el("button", "topbar-button", "Users", type="button", data_testid="users-open",
                               title="Add, disable or remove users")
        self.signout_button = el("button", "topbar-button", "Sign out", type="button", data_testid="signout")
        for button in (self.account_button, self.users_button, self.signout_button):
            bar.appendChild(button)
        self.bar_listeners.add(self.account_button, "click", lambda e: self._toggle(self.account, self.users))
        self.bar_listeners.add(self.users_button, "click", lambda e: self._toggle(self.users, self.account))
        self.bar_listeners.add(self.signout_button, "click", lambda e: self.spawn(self._signout()))
        return bar

    def _render_user(self) -> None:
        user = self.user or {}
        name = str(user.get("username", ""))
        self.user_label.textContent = name
        self.user_label.dataset.initial = name[:1]
        self.user_label.title = f"Signed in as {name}" + (" (administrator)" if user.get("is_admin") else "")
        self.user_label.classList.toggle("is-admin", bool(user.get("is_admin")))
        self.users_button.hidden = not user.get("is_admin")
        # With --auth none there is no session to end; behind an SSO proxy the proxy signs you in again.
        self.signout_button.hidden = (self.me or {}).get("auth") == "none"
        self.html.dataset.user = name

    def _toggle(self, panel, other) -> None:
        if panel is None:
            return
        if other is not None and other.is_open:
            other.close()
        if panel.is_open:
            panel.close()
        else:
            panel.open()

    async def _signout(self) -> None:
        self.signout_button.disabled = True
        try:
            await api.logout()
        except ApiError as exc:
            if exc.status == 0:
                self.signout_button.disabled = False
                if self.app is not None:
                    self.app.view.show_global_error(f"Could not sign out: {exc.message}")
                return
        api.clear_location()  # the next user starts from scratch
        forget_all(dom.TabStorage())  # and finds no unsent text of this one in the tab
        self.show_signin()

    def _leave(self) -> None:
        """Take down whatever is shown: the app (its streams, tasks, listeners), the panels, the form."""
        if self.app is not None:
            app, self.app = self.app, None
            self.set_app(None)
            app.destroy()
        for panel in (self.account, self.users):
            if panel is not None:
                panel.destroy()
        self.account = self.users = None
        if self.signin is not None:
            self.signin.destroy()
            self.signin = None
        self.bar_listeners.clear()
        self.topbar = self.body = None
        self.me = None
        self.root.textContent = ""
        self.root.classList.remove("merge-open")
