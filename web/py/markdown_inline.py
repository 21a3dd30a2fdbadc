"""The open paragraph's inline parse, done once for the part of it that can no longer change (plain Python, no `js`).

While an answer streams, the block it is writing is parsed again at every frame (markdown_render), and for a
paragraph most of that is markdown-it's inline parse of all its text. `InlinePrefix` keeps the inline tokens of the
paragraph's text up to a cut after which nothing can change them, and parses only the text after it:

- the cut follows a single space after a non-space and comes before a non-space character, so no word, URL,
  entity, escape or line break spans it, and a delimiter right after it sees the space before it, as in the whole;
- the text before it, parsed alone, left nothing open: no unmatched `*`, `_` (but inside a word), `~~`, backtick,
  bracket, `$` or `<` (each stays a literal text token when unmatched, so any in a text token means "maybe open")
  and no `\\(` or `\\[` (texmath's formula openers, which an escape would hide);
- the paragraph does not start with `[` (a task list item's box, which a core rule cuts off the first token) and
  the document has no link reference definition (links may use them).

Two parses then give the tokens of one: the tokens of the text before the cut are the prefix of the whole's, and
the text join after the inline rule joins the texts that meet at the cut (into a copy: the kept tokens are never
changed). tests/test_web_markdown.py checks a stream using it against a parse of the whole at every update.
"""

from __future__ import annotations

import re

from markdown_it.rules_core import StateCore
from markdown_it.rules_core.text_join import text_join
from markdown_it.token import Token

__all__ = ["InlinePrefix", "inline_rule"]

ENV_KEY = "inline_prefix"  # where a parse's env carries the stream's InlinePrefix
ADVANCE = 96  # characters of new text before the cut is moved on (each try parses them once more)
_CUT = re.compile(r"(?<=[^\s] )(?=[^\s])")
_OPEN = re.compile(r"[*`\[\]$<]|~~|(?<![^\W_])_|_(?![^\W_])")


class InlinePrefix:
    """One stream's kept inline tokens: `text` (a prefix of its open paragraph) parsed once."""

    __slots__ = ("text", "tokens", "tried")

    def __init__(self) -> None:
        self.text, self.tokens, self.tried = "", [], 0

    def parse(self, content: str, md, env, out: list) -> None:
        """Append the inline tokens of `content` to `out`, as `md.inline.parse` would."""
        if env.get("references") or content.startswith("["):
            md.inline.parse(content, md, env, out)
            return
        if not content.startswith(self.text):
            self.text, self.tokens, self.tried = "", [], 0
        if len(content) - max(len(self.text), self.tried) >= ADVANCE:
            self._advance(content, md, env)
        if self.tokens:
            out.extend(self.tokens[:-1])
            last = self.tokens[-1]
            out.append(last.copy() if last.type == "text" else last)  # the text join may add to it
        md.inline.parse(content[len(self.text):], md, env, out)

    def _advance(self, content: str, md, env) -> None:
        self.tried = len(content)
        cut = None
        for cut in _CUT.finditer(content, len(self.text) + 1):
            pass
        if cut is None:
            return
        piece = content[len(self.text):cut.start()]
        if "\\(" in piece or "\\[" in piece:
            return
        tokens = md.inline.parse(piece, md, env, [])
        if any(t.type == "text" and _OPEN.search(t.content) for t in tokens):
            return
        self.text += piece
        self.tokens = _joined(md, env, self.tokens + tokens)


def _joined(md, env, tokens: list) -> list:
    """`tokens` after markdown-it's own text join (escapes become text, adjacent texts one token)."""
    holder = Token("inline", "", 0, children=tokens)
    state = StateCore("", md, env)
    state.tokens = [holder]
    text_join(state)
    return holder.children


def inline_rule(state) -> None:
    """markdown-it's core `inline` rule, with the document's last inline token parsed through the stream's
    InlinePrefix when the parse's env carries one."""
    prefix = state.env.get(ENV_KEY)
    last = None
    if prefix is not None:
        last = next((t for t in reversed(state.tokens) if t.type == "inline"), None)
    for token in state.tokens:
        if token.type == "inline":
            if token.children is None:
                token.children = []
            if token is last:
                prefix.parse(token.content, state.md, state.env, token.children)
            else:
                state.md.inline.parse(token.content, state.md, state.env, token.children)
