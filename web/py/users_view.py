"""The users panel (top bar -> Users, admins only): list the users, add one (with a password, optionally an
admin), disable / enable, reset a password, remove. Disabling or resetting ends that user's sessions and streams
on the server. You cannot disable or remove yourself, nor the owner (the server refuses it too), so those rows have
no such buttons.

Remove asks to confirm (the button turns into "Remove?", as thread delete does); reset opens a password field in
the row. Clicks are delegated to one listener on the list, so redrawing creates no proxies.

Test hooks (`data-testid`): `users-panel`, `users-panel-close`, `user-list`, `user-row` (with `data-user-id`,
`data-username`, `data-disabled`), `user-toggle`, `user-reset`, `user-reset-password`, `user-reset-save`,
`user-reset-cancel`, `user-remove`, `user-add-form`, `user-add-name`, `user-add-password`, `user-add-admin`,
`user-add-submit`, `users-feedback`.
"""

from __future__ import annotations

import accounts
import api
from contract import ApiError
from dom import closest, el
from modal import Modal, feedback, field, set_feedback

__all__ = ["UsersPanel"]


class UsersPanel:
    def __init__(self, shell, parent) -> None:
        self.shell = shell
        self.users: list[dict] | None = None
        self.confirm_remove: int | None = None
        self.resetting: int | None = None
        self.modal = Modal(parent, "Users", "users-panel", self.close)
        listeners = self.modal.listeners

        section = self.modal.section("People who can sign in")
        self.list = el("div", "item-list user-list", data_testid="user-list")
        section.appendChild(self.list)
        self.feedback = feedback("users-feedback")
        section.appendChild(self.feedback)

        section = self.modal.section("Add a user")
        self.form = el("form", "modal-form", method="post", data_testid="user-add-form", novalidate="")
        self.name = el("input", "text-input", type="text", autocomplete="off", autocapitalize="none",
                       spellcheck="false", maxlength="64", data_testid="user-add-name")
        self.password = el("input", "text-input", type="password", autocomplete="new-password",
                           data_testid="user-add-password")
        row = el("div", "form-row")
        row.appendChild(field("User name", self.name))
        row.appendChild(field("Password", self.password, f"at least {accounts.MIN_PASSWORD} characters; "
                                                          "tell it to them, they can change it"))
        self.form.appendChild(row)
        actions = el("div", "form-actions")
        check = el("label", "checkbox")
        self.admin = el("input", None, type="checkbox", data_testid="user-add-admin")
        check.appendChild(self.admin)
        check.appendChild(el("span", None, "Administrator (can manage users)"))
        actions.appendChild(check)
        self.submit = el("button", "button button-primary", "Add user", type="submit", data_testid="user-add-submit")
        actions.appendChild(self.submit)
        self.form.appendChild(actions)
        self.add_feedback = feedback("user-add-feedback")
        self.form.appendChild(self.add_feedback)
        section.appendChild(self.form)

        listeners.add(self.form, "submit", self._on_add)
        listeners.add(self.list, "click", self._on_click)
        listeners.add(self.list, "keydown", self._on_key)

    @property
    def is_open(self) -> bool:
        return self.modal.is_open

    def open(self) -> None:
        self.confirm_remove = None
        self.resetting = None
        set_feedback(self.feedback, None)
        set_feedback(self.add_feedback, None)
        self.render()
        self.modal.show()
        self.name.focus()
        self.shell.spawn(self._load())

    def close(self) -> None:
        self.password.value = ""
        self.resetting = None
        self.modal.hide()

    def destroy(self) -> None:
        self.modal.destroy()

    async def _load(self) -> None:
        try:
            self.users = await api.list_users()
        except ApiError as exc:
            set_feedback(self.feedback, f"Cannot list the users: {exc.message}", "error")
            return
        self.render()

    # ---- rendering ----------------------------------------------------------------------------------------------

    def render(self) -> None:
        self.list.textContent = ""
        if self.users is None:
            self.list.appendChild(el("div", "item-empty", "Loading…"))
            return
        me_id = (self.shell.user or {}).get("id")
        for user in accounts.sort_users(self.users):
            self.list.appendChild(self._row(user, me_id))

    def _row(self, user: dict, me_id):
        uid = user.get("id")
        disabled = bool(user.get("disabled"))
        row = el("div", "item-row user-row", data_testid="user-row", data_user_id=uid,
                 data_username=user.get("username", ""), data_disabled="true" if disabled else "false")
        text = el("div", "item-text")
        name = el("div", "item-name")
        name.appendChild(el("span", None, str(user.get("username", ""))))
        for flag in accounts.user_flags(user, me_id):
            name.appendChild(el("span", "badge", flag, data_flag=flag.replace(" ", "-")))
        text.appendChild(name)
        text.appendChild(el("div", "item-meta", f"added {accounts.when(user.get('created_at'))}"))
        row.appendChild(text)
        buttons = el("div", "item-actions")
        if uid == self.resetting:
            box = el("input", "text-input text-input-small", type="password", autocomplete="new-password",
                     placeholder="New password", aria_label=f"New password for {user.get('username', '')}",
                     data_testid="user-reset-password")
            buttons.appendChild(box)
            buttons.appendChild(el("button", "button button-small button-primary", "Save", type="button",
                                   data_testid="user-reset-save", data_user_id=uid))
            buttons.appendChild(el("button", "button button-small", "Cancel", type="button",
                                   data_testid="user-reset-cancel", data_user_id=uid))
        else:
            buttons.appendChild(el("button", "button button-small", "Reset password", type="button",
                                   data_testid="user-reset", data_user_id=uid,
                                   title="Set a new password (signs them out everywhere)"))
            if accounts.can_manage(user, me_id):
                buttons.appendChild(el("button", "button button-small", "Enable" if disabled else "Disable",
                                       type="button", data_testid="user-toggle", data_user_id=uid,
                                       title="Let them sign in again" if disabled
                                       else "Stop them signing in (signs them out at once)"))
                confirm = uid == self.confirm_remove
                buttons.appendChild(el("button", "button button-small button-danger" if confirm
                                       else "button button-small button-quiet", "Remove?" if confirm else "Remove",
                                       type="button", data_testid="user-remove", data_user_id=uid,
                                       data_confirm="true" if confirm else "false",
                                       title="Click again to remove them and their conversations" if confirm
                                       else "Remove this user and their conversations (asks to confirm)"))
        row.appendChild(buttons)
        return row

    # ---- actions ------------------------------------------------------------------------------------------------

    def _on_click(self, event) -> None:
        button = closest(event.target, "button[data-user-id]")
        if not button:
            return
        uid = int(button.dataset.userId)
        action = str(button.dataset.testid)
        user = next((u for u in self.users or () if u.get("id") == uid), None)
        if user is None:
            return
        if action != "user-remove":
            self.confirm_remove = None
        if action == "user-toggle":
            self.shell.spawn(self._update(user, f"{'Enabled' if user.get('disabled') else 'Disabled'} {{name}}.",
                                          disabled=not user.get("disabled")))
        elif action == "user-reset":
            self.resetting = uid
            self.render()
            box = self.list.querySelector("[data-testid=user-reset-password]")
            if box:
                box.focus()
        elif action == "user-reset-cancel":
            self.resetting = None
            self.render()
        elif action == "user-reset-save":
            self._save_reset(user)
        elif action == "user-remove":
            if self.confirm_remove == uid:
                self.confirm_remove = None
                self.shell.spawn(self._remove(user))
            else:
                self.confirm_remove = uid
                self.render()

    def _on_key(self, event) -> None:
        if event.key == "Enter" and closest(event.target, "[data-testid=user-reset-password]"):
            event.preventDefault()
            user = next((u for u in self.users or () if u.get("id") == self.resetting), None)
            if user is not None:
                self._save_reset(user)

    def _save_reset(self, user: dict) -> None:
        box = self.list.querySelector("[data-testid=user-reset-password]")
        password = str(box.value) if box else ""
        problem = accounts.password_problem(password)
        if problem:
            set_feedback(self.feedback, problem, "error")
            return
        self.shell.spawn(self._update(user, "New password set for {name}; they were signed out.", password=password))

    async def _update(self, user: dict, done: str, **fields) -> None:
        try:
            updated = await api.update_user(user["id"], **fields)
        except ApiError as exc:
            set_feedback(self.feedback, accounts.action_error(exc.status, exc.message, exc.retry_after), "error")
            return
        if "password" in fields:
            self.resetting = None
        self._replace(updated)
        set_feedback(self.feedback, done.format(name=user.get("username", "")))

    async def _remove(self, user: dict) -> None:
        try:
            await api.remove_user(user["id"])
        except ApiError as exc:
            if exc.status != 404:
                set_feedback(self.feedback, accounts.action_error(exc.status, exc.message, exc.retry_after), "error")
                self.render()
                return
        self.users = [u for u in self.users or () if u.get("id") != user["id"]]
        self.render()
        set_feedback(self.feedback, f"Removed {user.get('username', '')} and their conversations.")

    def _replace(self, updated: dict) -> None:
        self.users = [updated if u.get("id") == updated.get("id") else u for u in self.users or ()]
        self.render()

    def _on_add(self, event) -> None:
        event.preventDefault()
        name = str(self.name.value).strip()
        password = str(self.password.value)
        if not name:
            set_feedback(self.add_feedback, "Give them a user name.", "error")
            self.name.focus()
            return
        problem = accounts.password_problem(password)
        if problem:
            set_feedback(self.add_feedback, problem.replace("new password", "password"), "error")
            self.password.focus()
            return
        self.shell.spawn(self._add(name, password, bool(self.admin.checked)))

    async def _add(self, name: str, password: str, is_admin: bool) -> None:
        self.submit.disabled = True
        try:
            user = await api.add_user(name, password, is_admin)
        except ApiError as exc:
            set_feedback(self.add_feedback, accounts.action_error(exc.status, exc.message, exc.retry_after), "error")
            return
        finally:
            self.submit.disabled = False
        self.name.value = ""
        self.password.value = ""
        self.admin.checked = False
        self.users = [u for u in self.users or () if u.get("id") != user.get("id")] + [user]
        self.render()
        set_feedback(self.add_feedback, f"Added {user.get('username', name)}. They can sign in now.")
        self.name.focus()
