"""Plain text appended to an answer's open paragraph, shown without parsing the paragraph again (no `js`).

While an answer streams, most tokens are words added to the paragraph being written, and parsing that paragraph
again at every frame costs a few ms in Pyodide, growing with the paragraph (markdown_render parses the last two
blocks). `extend_paragraph` takes the common case in O(added text) instead: everything after the paragraph's last
text node holds only characters that are literal wherever they stand (letters, digits, spaces, plain punctuation;
no newline, no `*_~~\\`[]()<>&$|:@#`), on a last line whose first character cannot begin a block (nothing added to
it can make it a list item, heading, quote or fence), right after a text node that maps verbatim to the source and
whose last word nothing added could complete (an escape, an entity, an autolink). Anything else returns None and
the caller parses. tests/test_web_markdown.py checks that the result equals a parse at every step of many streams.
"""

from __future__ import annotations

import re

from markdown_parts import Node, text_node

__all__ = ["extend_paragraph"]

# A single `~` is literal in markdown-it (strikethrough needs `~~`, checked separately); `:` and `@` (autolinks) and
# `!` (images) are left to the parser.
_LITERAL = re.compile(r"(?:[^\W_]|[ \t.,;?'\"%/~-])*\Z")
# What a line that could still become a block start begins with (a list item, heading, quote, fence, thematic break,
# table, math block, link reference definition, indented line); `~~~` is left to the "~~" check.
_BLOCK_STARTS = frozenset("-+*_#>=|`<$\\[ \t0123456789")
# In the paragraph's last word, what the added text could complete: an escape, an entity, a delimiter whose
# flanking changes, an autolink (`http:` + `//`, `a@b` + `.c`), an angle-bracket link.
_JOINS = re.compile(r"[\\&*_`:@<][^ \t]*\Z")


def extend_paragraph(node: Node, old_source: str, source: str) -> Node | None:
    """The `p` Node for `source`, given `node`, the open last paragraph parsed from `old_source` (a prefix of
    `source`), when the added text cannot change how the paragraph parses; else None."""
    if node.tag != "p" or not node.children:
        return None
    line_start = source.rfind("\n", 0, len(old_source)) + 1
    first = source[line_start:line_start + 1]
    if not first or first in _BLOCK_STARTS:
        return None
    kids = node.children
    j = len(kids) - 1
    if kids[j].tag is None and not kids[j].text.strip(" \t"):
        j -= 1  # the paragraph's trailing blanks, kept as their own text node
    if j < 0:
        return None
    leaf = kids[j]
    if (leaf.tag is not None or not leaf.text or leaf.offsets is not None or leaf.chrome or leaf.atom is not None
            or leaf.end < line_start or old_source[leaf.end:].strip(" \t")
            or not source.startswith(leaf.text, leaf.start)):
        return None
    added = source[leaf.end:]
    if (not _LITERAL.match(added) or "~~" in source[max(0, leaf.end - 2):]
            or "www." in source[max(line_start, leaf.end - 4):]
            or _JOINS.search(source, max(line_start, leaf.end - 64), leaf.end)):
        return None
    body = added.rstrip(" \t")
    end = leaf.end + len(body)
    grown = text_node(leaf.text + body, [leaf.start, end], leaf.start)
    blanks = added[len(body):]
    tail = [text_node(blanks, [end, end + len(blanks)], end)] if blanks else []
    return Node("p", dict(node.attrs), [*kids[:j], grown, *tail])
