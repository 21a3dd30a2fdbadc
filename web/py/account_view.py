"""The account panel (top bar -> Account): change your own password; list, create and revoke your API tokens.

A new token is shown once, with a Copy button; the server never shows it again. Revoking asks to confirm (the
button turns into "Revoke?"). Every call goes through api.py; a 401 there takes the page to the sign-in form.

Test hooks (`data-testid`): `account-panel`, `account-panel-close`, `password-form`, `password-current`,
`password-new`, `password-repeat`, `password-submit`, `password-feedback`, `token-list`, `token-row` (with
`data-token-id`), `token-revoke`, `token-name`, `token-create`, `token-new`, `token-value`, `token-copy`,
`token-feedback`.
"""

from __future__ import annotations

import accounts
import api
from contract import ApiError
from dom import closest, el
from modal import Modal, feedback, field, rich_text, set_feedback

__all__ = ["AccountPanel"]


class AccountPanel:
    def __init__(self, shell, parent) -> None:
        self.shell = shell
        self.tokens: list[dict] | None = None
        self.confirm_revoke: int | None = None
        self.new_token: str | None = None
        self.modal = Modal(parent, "Your account", "account-panel", self.close)
        listeners = self.modal.listeners

        section = self.modal.section("Password")
        self.password_intro = el("p", "modal-text")
        section.appendChild(self.password_intro)
        self.password_form = el("form", "modal-form", method="post", data_testid="password-form", novalidate="")
        self.current = el("input", "text-input", type="password", autocomplete="current-password",
                          data_testid="password-current")
        self.current_field = field("Current password", self.current)
        self.new = el("input", "text-input", type="password", autocomplete="new-password",
                      data_testid="password-new")
        self.repeat = el("input", "text-input", type="password", autocomplete="new-password",
                         data_testid="password-repeat")
        self.password_form.appendChild(self.current_field)
        row = el("div", "form-row")
        row.appendChild(field("New password", self.new, f"at least {accounts.MIN_PASSWORD} characters"))
        row.appendChild(field("Repeat it", self.repeat))
        self.password_form.appendChild(row)
        actions = el("div", "form-actions")
        self.password_submit = el("button", "button button-primary", "Change password", type="submit",
                                  data_testid="password-submit")
        actions.appendChild(self.password_submit)
        self.password_feedback = feedback("password-feedback")
        actions.appendChild(self.password_feedback)
        self.password_form.appendChild(actions)
        section.appendChild(self.password_form)

        section = self.modal.section("API tokens")
        intro = el("p", "modal-text")
        rich_text(intro, "For scripts and other tools: send `Authorization: Bearer <token>` with each request. "
                         "A token acts as you until you revoke it.")
        section.appendChild(intro)
        self.list = el("div", "item-list", data_testid="token-list")
        section.appendChild(self.list)
        self.token_box = el("div", "token-new", data_testid="token-new")
        self.token_box.hidden = True
        self.token_box.appendChild(el("div", "token-new-label", "Copy your new token now: it is shown only once."))
        value_row = el("div", "token-new-row")
        self.token_value = el("code", "token-value", data_testid="token-value")
        value_row.appendChild(self.token_value)
        self.token_copy = el("button", "button", "Copy", type="button", data_testid="token-copy")
        value_row.appendChild(self.token_copy)
        self.token_box.appendChild(value_row)
        section.appendChild(self.token_box)
        self.token_form = el("form", "modal-form form-inline", method="post", novalidate="")
        self.token_name = el("input", "text-input", type="text", maxlength="100", data_testid="token-name",
                             placeholder="Token name, e.g. “backup script”", aria_label="New token name")
        self.token_form.appendChild(self.token_name)
        self.token_form.appendChild(el("button", "button button-primary", "Create token", type="submit",
                                       data_testid="token-create"))
        section.appendChild(self.token_form)
        self.token_feedback = feedback("token-feedback")
        section.appendChild(self.token_feedback)

        listeners.add(self.password_form, "submit", self._on_password)
        listeners.add(self.token_form, "submit", self._on_create)
        listeners.add(self.list, "click", self._on_list_click)
        listeners.add(self.token_copy, "click", lambda e: shell.spawn(self._copy()))

    # ---- open / close -------------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.modal.is_open

    def open(self) -> None:
        self.confirm_revoke = None
        self.new_token = None
        self.token_box.hidden = True
        self.token_value.textContent = ""
        set_feedback(self.password_feedback, None)
        set_feedback(self.token_feedback, None)
        self.render_password()
        self.render_tokens()
        self.modal.show()
        (self.current if not self.current_field.hidden else self.new).focus()
        self.shell.spawn(self._load())

    def close(self) -> None:
        self.new_token = None
        self.token_value.textContent = ""  # the secret does not linger in the DOM
        for node in (self.current, self.new, self.repeat):
            node.value = ""
        self.modal.hide()

    def destroy(self) -> None:
        self.modal.destroy()

    # ---- password -----------------------------------------------------------------------------------------------

    def render_password(self) -> None:
        user = self.shell.user or {}
        has_password = bool(user.get("has_password", True))
        self.current_field.hidden = not has_password
        name = user.get("username", "")
        self.password_intro.textContent = (
            f"Signed in as {name}. Changing the password signs you out everywhere else." if has_password else
            f"Signed in as {name} with a sign-in link: you have no password yet. Set one to sign in with the form.")
        self.password_submit.textContent = "Change password" if has_password else "Set password"

    def _on_password(self, event) -> None:
        event.preventDefault()
        problem = accounts.password_problem(str(self.new.value), str(self.repeat.value))
        if problem:
            set_feedback(self.password_feedback, problem, "error")
            return
        current = str(self.current.value) if not self.current_field.hidden else ""
        self.shell.spawn(self._change_password(current or None, str(self.new.value)))

    async def _change_password(self, current: str | None, new: str) -> None:
        self.password_submit.disabled = True
        try:
            answer = await api.change_password(current, new)
        except ApiError as exc:
            set_feedback(self.password_feedback, accounts.action_error(exc.status, exc.message, exc.retry_after),
                         "error")
            return
        finally:
            self.password_submit.disabled = False
        for node in (self.current, self.new, self.repeat):
            node.value = ""
        self.shell.set_user(answer.get("user") or self.shell.user)
        self.render_password()
        set_feedback(self.password_feedback, "Password changed. Your other sessions were signed out.")

    # ---- tokens -------------------------------------------------------------------------------------------------

    async def _load(self) -> None:
        try:
            self.tokens = await api.list_tokens()
        except ApiError as exc:
            set_feedback(self.token_feedback, f"Cannot list your tokens: {exc.message}", "error")
            return
        self.render_tokens()

    def render_tokens(self) -> None:
        self.list.textContent = ""
        if self.tokens is None:
            self.list.appendChild(el("div", "item-empty", "Loading…"))
            return
        if not self.tokens:
            self.list.appendChild(el("div", "item-empty", "No tokens yet."))
        for token in self.tokens:
            tid = token.get("id")
            row = el("div", "item-row", data_testid="token-row", data_token_id=tid)
            text = el("div", "item-text")
            text.appendChild(el("div", "item-name", str(token.get("name") or "(no name)")))
            text.appendChild(el("div", "item-meta", accounts.token_label(token)))
            row.appendChild(text)
            confirm = tid == self.confirm_revoke
            row.appendChild(el("button", "button button-small button-danger" if confirm else "button button-small",
                               "Revoke?" if confirm else "Revoke", type="button", data_testid="token-revoke",
                               data_token_id=tid, data_confirm="true" if confirm else "false",
                               title="Click again to revoke it" if confirm else "Revoke this token (asks to confirm)"))
            self.list.appendChild(row)

    def _on_list_click(self, event) -> None:
        button = closest(event.target, "[data-testid=token-revoke]")
        if not button:
            return
        token_id = int(button.dataset.tokenId)
        if self.confirm_revoke == token_id:
            self.confirm_revoke = None
            self.shell.spawn(self._revoke(token_id))
        else:
            self.confirm_revoke = token_id
            self.render_tokens()

    async def _revoke(self, token_id: int) -> None:
        try:
            await api.revoke_token(token_id)
        except ApiError as exc:
            if exc.status != 404:
                set_feedback(self.token_feedback, f"Could not revoke it: {exc.message}", "error")
                return
        name = next((t.get("name") for t in self.tokens or () if t.get("id") == token_id), "")
        self.tokens = [t for t in self.tokens or () if t.get("id") != token_id]
        self.render_tokens()
        set_feedback(self.token_feedback, f"Revoked “{name}”." if name else "Revoked.")

    def _on_create(self, event) -> None:
        event.preventDefault()
        name = str(self.token_name.value).strip()
        if not name:
            set_feedback(self.token_feedback, "Give the token a name (what will use it?).", "error")
            self.token_name.focus()
            return
        self.shell.spawn(self._create(name))

    async def _create(self, name: str) -> None:
        try:
            token = await api.create_token(name)
        except ApiError as exc:
            set_feedback(self.token_feedback, accounts.action_error(exc.status, exc.message, exc.retry_after),
                         "error")
            return
        self.token_name.value = ""
        self.new_token = str(token.get("token") or "")
        self.token_value.textContent = self.new_token
        self.token_box.hidden = not self.new_token
        self.tokens = [{k: v for k, v in token.items() if k != "token"}] + list(self.tokens or ())
        self.confirm_revoke = None
        self.render_tokens()
        set_feedback(self.token_feedback, None)

    async def _copy(self) -> None:
        if not self.new_token:
            return
        try:
            await api.copy_text(self.new_token)
        except ApiError as exc:
            set_feedback(self.token_feedback, f"{exc.message} Select the token and copy it by hand.", "error")
            return
        set_feedback(self.token_feedback, "Copied.")
