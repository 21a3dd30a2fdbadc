#!/usr/bin/env python3
"""Render the nginx templates in this folder into a config directory nginx can run from.

    python3 nginx/render.py --out run/nginx/conf PREFIX=$PWD/run/nginx WEB_ROOT=$PWD/web APP_ADDR=127.0.0.1:8080 ...

Every `*.template` file next to this script is written to `--out` without its `.template` suffix. A placeholder is
`${NAME}` with an upper-case NAME; nginx's own variables (`$host`, `$remote_addr`, ...) are lower case and are left
alone. Every placeholder must be given and every given name must be used, so a typo fails here, not in production.
Values may not contain a double quote, a semicolon, braces or a line break (they are pasted into nginx syntax).

With `PREFIX` given, the folders nginx expects under it are created: `logs/` and `tmp/` (its temp paths).

`pinchat-headers.conf` (the security headers for the files nginx serves itself) is written from the app's own
`server/page_headers.py`, so the two servers cannot drift apart.

Used by `scripts/nginx.sh` (`just nginx`) and by `tests/test_nginx.py`, so the tests run the config that ships.
Standard library only: it runs under any Python 3.9+, no virtualenv needed.
"""

from __future__ import annotations

import argparse
import re
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
UNSAFE = re.compile(r'["\n\r;{}]')
PAGE_HEADERS_SOURCE = HERE.parent / "server" / "page_headers.py"
HEADERS_FILE = "pinchat-headers.conf"


class RenderError(ValueError):
    pass


def render_text(text: str, values: dict[str, str], name: str = "<template>") -> tuple[str, set[str]]:
    """Substitute the placeholders of one template; return the text and the names it used."""
    used: set[str] = set()
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            missing.append(key)
            return match.group(0)
        used.add(key)
        return values[key]

    out = PLACEHOLDER.sub(substitute, text)
    if missing:
        raise RenderError(f"{name}: no value for {', '.join(sorted(set(missing)))}")
    return out, used


def headers_conf(source: Path = PAGE_HEADERS_SOURCE) -> str:
    """`add_header` lines (location context) for the app's PAGE_HEADERS: what the app sends with every response."""
    headers = runpy.run_path(str(source))["PAGE_HEADERS"]
    lines = [f"# Written by render.py from {source.parent.name}/{source.name}: the security headers the app sends with",
             "# every response, for the files nginx serves itself (location context; add_header in a location replaces",
             "# the server level's, so each location includes this file)."]
    for name, value in headers.items():
        if re.search(r'["\\$\n\r]', value):  # nginx would read `$name` as its variable
            raise RenderError(f"{source.name}: header {name} may not hold a quote, '$', a backslash or a line break")
        lines.append(f'add_header {name} "{value}" always;')
    return "\n".join(lines) + "\n"


def render_dir(out: Path, values: dict[str, str], templates: Path = HERE) -> list[Path]:
    """Render every `*.template` of `templates` into `out`; return the files written."""
    for key, value in values.items():
        if UNSAFE.search(value):
            raise RenderError(f"{key}={value!r}: values may not contain quotes, ';', braces or line breaks")
    sources = sorted(templates.glob("*.template"))
    if not sources:
        raise RenderError(f"no *.template files in {templates}")
    used: set[str] = set()
    rendered: dict[Path, str] = {}
    for source in sources:
        text, names = render_text(source.read_text(), values, source.name)
        used |= names
        rendered[out / source.name.removesuffix(".template")] = text
    rendered[out / HEADERS_FILE] = headers_conf()
    unused = set(values) - used
    if unused:
        raise RenderError(f"unknown variable(s) {', '.join(sorted(unused))}: no template uses them")
    out.mkdir(parents=True, exist_ok=True)
    for path, text in rendered.items():
        path.write_text(text)
    if "PREFIX" in values:
        for sub in ("logs", "tmp"):
            (Path(values["PREFIX"]) / sub).mkdir(parents=True, exist_ok=True)
    return list(rendered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the rendered config into")
    parser.add_argument("--templates", type=Path, default=HERE, help="folder holding the *.template files")
    parser.add_argument("assignments", nargs="*", metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    values: dict[str, str] = {}
    for item in args.assignments:
        key, sep, value = item.partition("=")
        if not sep or not PLACEHOLDER.fullmatch("${" + key + "}"):
            parser.error(f"expected NAME=VALUE with an upper-case NAME, got {item!r}")
        values[key] = value
    try:
        written = render_dir(args.out, values, args.templates)
    except RenderError as exc:
        print(f"render: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
