"""`python -m server users ...`: manage accounts from a shell (a headless box set up over SSH).

Works on the database file directly, with the server running or not (SQLite in WAL mode takes both).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sqlite3
import sys
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from .credentials import TOKEN_PREFIX, hash_password, login_link, new_secret, secret_hash
from .config import Settings
from .db import Database
from .account_schemas import Username
from .schemas import MIN_PASSWORD_CHARS


def parse(argv: list[str]) -> argparse.Namespace:
    # --db is accepted before or after the command (`users --db F list` and `users list --db F`).
    db_option = argparse.ArgumentParser(add_help=False)
    db_option.add_argument("--db", type=Path, default=argparse.SUPPRESS,
                           help=f"SQLite database file [env PINCHAT_DB; default: {Settings.db}]")
    parser = argparse.ArgumentParser(prog="python -m server users", description="Manage pinchat accounts.",
                                     parents=[db_option])
    subparsers = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(name, help=help, parents=[db_option])

    add = command("add", "add a user (asks for the password)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="the user manages accounts too")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    command("list", "list the users")
    for name, text in (("disable", "disable a user (ends their sessions)"), ("enable", "enable a disabled user"),
                       ("remove", "remove a user and all their conversations")):
        command(name, text).add_argument("name")
    passwd = command("passwd", "set a user's password (ends their sessions)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    link = command("login-url", "print a one-time sign-in URL (default user: the owner)")
    link.add_argument("name", nargs="?")
    link.add_argument("--base-url", default=f"http://localhost:{os.environ.get('PINCHAT_PORT', Settings.port)}/",
                      help="the address your browser opens the server at [default: %(default)s]")
    token = command("token", "create a personal API token for a user and print it")
    token.add_argument("name")
    token.add_argument("--label", default="command line", help="the token's name in the user's token list")
    args = parser.parse_args(argv)
    args.db = getattr(args, "db", None) or Path(os.environ.get("PINCHAT_DB", Settings.db))
    return args


def new_user_name(name: str) -> str:
    """The name as the API would take it (trimmed, one line, 1-64 characters), or exit saying what is wrong."""
    try:
        return TypeAdapter(Username).validate_python(name)
    except ValidationError as exc:
        sys.exit(f"error: {name!r} cannot be a user name: {exc.errors()[0]['msg']}")


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            sys.exit("error: the two passwords differ")
    if len(password) < MIN_PASSWORD_CHARS:
        sys.exit(f"error: a password needs at least {MIN_PASSWORD_CHARS} characters")
    return password


async def run(args: argparse.Namespace) -> str:
    db = await Database.open(args.db)
    accounts = db.accounts
    try:
        owner = await accounts.ensure_owner()
        if args.command == "list":
            rows = [f"{u['id']:>4}  {u['username']:<24} {'admin' if u['is_admin'] else 'user':<6}"
                    f"{'disabled' if u['disabled'] else 'active':<9}{'' if u['has_password'] else 'no password'}"
                    for u in await accounts.list_users()]
            return "\n".join(rows)
        if args.command == "add":
            name = new_user_name(args.name)
            password = read_password(args.password_stdin)
            try:
                user = await accounts.create_user(name, await hash_password(password), args.admin)
            except sqlite3.IntegrityError:
                sys.exit(f"error: there is already a user named {name!r}")
            return f"added {user['username']}{' (admin)' if user['is_admin'] else ''}"
        user = owner if args.command == "login-url" and not args.name else await accounts.user_by_name(args.name)
        if user is None:
            sys.exit(f"error: no user named {args.name!r} (see `python -m server users list`)")
        if args.command == "login-url":
            return await login_link(accounts, user["id"], args.base_url)
        if args.command == "token":
            secret = TOKEN_PREFIX + new_secret()
            await accounts.create_token(user["id"], args.label, secret_hash(secret))
            return secret
        if args.command in ("disable", "enable"):
            await accounts.update_user(user["id"], disabled=args.command == "disable")
            if args.command == "disable":
                await accounts.delete_sessions(user["id"])
        elif args.command == "passwd":
            await accounts.update_user(user["id"], password_hash=await hash_password(read_password(args.password_stdin)))
            await accounts.delete_sessions(user["id"])
        elif args.command == "remove":
            if user["id"] == owner["id"]:
                sys.exit("error: the owner account cannot be removed")
            await accounts.delete_user(user["id"])
        return f"{args.command}: done for {user['username']}"
    finally:
        await db.close()


def main(argv: list[str]) -> None:
    print(asyncio.run(run(parse(argv))))
