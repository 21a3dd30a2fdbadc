"""The sign-in form: shown when nobody is signed in (GET /api/auth/me answers 401) and whenever a session ends.

The form never submits by itself (the handler prevents it; `method=post` so that even then no password lands in a
URL): `on_submit(username, password)` does the POST (shell.py). A note explains an expired sign-in link
(`#signin-expired`), a line shows the server's answer to a failed attempt.

Test hooks (`data-testid`): `signin`, `signin-form`, `signin-username`, `signin-password`, `signin-submit`,
`signin-error`, `signin-note`.
"""

from __future__ import annotations

from dom import Listeners, el
from modal import field, rich_text

__all__ = ["SignInView"]


class SignInView:
    def __init__(self, root, on_submit, *, hint: str, note: str | None = None, error: str | None = None) -> None:
        self.on_submit = on_submit
        self.listeners = Listeners()
        self.node = el("div", "signin", data_testid="signin")
        card = el("div", "signin-card")
        card.appendChild(el("div", "signin-brand", "pinchat"))
        card.appendChild(el("h1", "signin-title", "Sign in"))
        self.note = el("div", "signin-note", role="note", data_testid="signin-note")
        card.appendChild(self.note)
        self.form = el("form", "signin-form", method="post", data_testid="signin-form", novalidate="")
        self.username = el("input", "text-input", type="text", name="username", autocomplete="username",
                           autocapitalize="none", spellcheck="false", required="", data_testid="signin-username")
        self.password = el("input", "text-input", type="password", name="password", autocomplete="current-password",
                           required="", data_testid="signin-password")
        self.form.appendChild(field("User name", self.username))
        self.form.appendChild(field("Password", self.password))
        self.error = el("div", "signin-error", role="alert", data_testid="signin-error")
        self.form.appendChild(self.error)
        self.submit = el("button", "button button-primary signin-submit", "Sign in", type="submit",
                         data_testid="signin-submit")
        self.form.appendChild(self.submit)
        card.appendChild(self.form)
        hint_node = el("p", "signin-hint", data_testid="signin-hint")
        rich_text(hint_node, hint)
        card.appendChild(hint_node)
        self.node.appendChild(card)
        root.appendChild(self.node)
        self.listeners.add(self.form, "submit", self._on_submit)
        self.set_note(note)
        self.set_error(error)

    def focus(self) -> None:
        (self.password if self.username.value else self.username).focus()

    def set_note(self, text: str | None) -> None:
        rich_text(self.note, text)
        self.note.hidden = not text

    def set_error(self, text: str | None) -> None:
        self.error.textContent = text or ""
        self.error.hidden = not text

    def set_busy(self, busy: bool) -> None:
        self.submit.disabled = busy
        self.submit.textContent = "Signing in…" if busy else "Sign in"

    def _on_submit(self, event) -> None:
        event.preventDefault()
        username = str(self.username.value).strip()
        password = str(self.password.value)
        if not username or not password:
            self.set_error("Enter your user name and password.")
            (self.username if not username else self.password).focus()
            return
        self.set_error(None)
        self.on_submit(username, password)

    def failed(self, message: str) -> None:
        """A refused attempt: say why, empty the password, let the user try again."""
        self.set_busy(False)
        self.set_error(message)
        self.password.value = ""
        self.password.focus()

    def destroy(self) -> None:
        self.listeners.clear()
        self.node.remove()

