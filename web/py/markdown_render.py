"""Markdown of assistant answers -> DOM-neutral blocks, while they stream (plain Python, no `js`).

    stream = MarkdownStream()            # one per message
    blocks = stream.update(source)       # at each frame: the whole source so far; returns list[Block]

Each top-level `Block` has a stable `key` (source start, kind), its span `[start, end)` and a `node` tree
(`markdown_parts.Node`). `update` returns the same Block object for a block whose text did not change, so the view
keeps its DOM (`if old is new`) and rebuilds only the rest - in practice the last one or two blocks. Only the last
two blocks of the previous parse are parsed again (`stream.reparsed` counts them, `stream.parsed_chars` their
characters) and the blocks before them, `stream.stable`, are not even looked at (the view skips them too), so a
frame costs the tail, not the answer; an unchanged source (the final text at `done`) parses nothing. The last
block is rendered as what it will become: an open fence is a code block, an unclosed `**`, `_`, `~~`, `` ` `` or
link at the very end is closed virtually, a half-typed table delimiter row is completed.

CommonMark + GFM tables, strikethrough, task lists, autolinks; `$..$`, `$$..$$`, `\\(..\\)`, `\\[..\\]` as MathML;
fenced code highlighted with Pygments. Raw HTML is text (`html=False`), links are http(s)/mailto only, images are
click-to-load placeholders (markdown_parts). Pins: `source_offset`, `selection_range` and `marks` map between DOM
positions (text node + offset) and source offsets. `warm_up()` pays the first-use imports ahead (after boot).
"""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.gfm_autolink import gfm_autolink_plugin
from mdit_py_plugins.tasklists import tasklists_plugin
from mdit_py_plugins.texmath import texmath_plugin

from markdown_append import extend_paragraph
from markdown_parts import (Node, chrome_text, highlight, image_placeholder, mark_long_cells, marks, mathml, patch_tail,
                            safe_href, selection_range, source_offset, text_node, text_nodes)

__all__ = ["Block", "MarkdownStream", "render_blocks", "warm_up", "warm_up_steps", "source_offset", "selection_range",
           "marks", "text_nodes"]


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable(["table", "strikethrough"])
    md.use(dollarmath_plugin, double_inline=True).use(texmath_plugin, delimiters="brackets")
    return md.use(tasklists_plugin).use(gfm_autolink_plugin)


MD = _parser()


class Block:
    __slots__ = ("key", "kind", "start", "end", "text", "node", "last")

    def __init__(self, kind, start, end, text, node, last):
        self.key = (start, kind)
        self.kind, self.start, self.end, self.text, self.node, self.last = kind, start, end, text, node, last

    def __repr__(self):
        return f"Block({self.kind}@{self.start}:{self.end}{' last' if self.last else ''})"


class MarkdownStream:
    """The blocks of one message's source as it grows. `update` accepts any new source; an append is cheap."""

    def __init__(self):
        self.source = ""
        self.blocks: list[Block] = []
        self.reparsed = 0  # top-level blocks parsed by the last update
        self.rendered = 0  # Block trees built by the last update (the rest came from the cache)
        self.parsed_chars = 0  # source characters parsed by the last update (the tail, not the answer)
        self.stable = 0  # leading blocks the last update left untouched (the same objects, not even looked at)

    def update(self, source: str) -> list[Block]:
        """Nothing here is O(answer) when text is appended: the parse starts at the second-to-last block and only
        the blocks from there on are looked at (no cache of the whole list, no walk over the finished blocks)."""
        grown = None
        if self.blocks and self.blocks[-1].kind == "paragraph" and len(source) > len(self.source) \
                and source.startswith(self.source):
            grown = extend_paragraph(self.blocks[-1].node, self.source, source)  # words added to the paragraph
        if self.blocks and source == self.source:  # nothing new (e.g. the view's final `show` of what it streamed)
            n, fresh = len(self.blocks), []
            self.rendered = self.parsed_chars = 0
        elif grown is not None:
            n, start = len(self.blocks) - 1, self.blocks[-1].start
            fresh = [Block("paragraph", start, len(source), source[start:], grown, True)]
            self.blocks[n:] = fresh
            self.rendered, self.parsed_chars = 1, 0
        else:
            n = 0
            if self.blocks and source.startswith(self.source):
                n = max(0, len(self.blocks) - 2)  # only the tail may change when text is appended (module doc)
            base = self.blocks[n - 1].end if n else 0
            cache = {(b.start, b.text, b.last): b for b in self.blocks[n:]}
            fresh = _parse(source, base, cache)
            self.rendered = sum(1 for b in fresh if (b.start, b.text, b.last) not in cache)
            self.parsed_chars = len(source) - base
            self.blocks[n:] = fresh
        self.reparsed, self.stable, self.source = len(fresh), n, source
        return list(self.blocks)


def render_blocks(source: str) -> list[Block]:
    """All blocks of a finished (or one-off) source."""
    return _parse(source, 0, {})


# Languages whose Pygments lexer `warm_up` loads ahead (each is a module import and a regex compile on first use).
WARM_LANGS = ("python", "javascript", "typescript", "bash", "json", "html", "css", "sql", "yaml", "c", "cpp", "java",
              "rust", "go")
_WARM_SAMPLES = (  # markdown-it's rules; latex2mathml (import, symbol table); Pygments; an open fence's chunks
    "# T\n\nA **b** _c_ `d` ~~e~~ [f](https://e.x) <https://e.x> ![i](https://e.x/i.png)\n\n- [x] g\n\n1. h\n\n"
    "> i\n\n| a | b |\n|:--|--:|\n| 1 | 2 |\n\n---\n\n    code\n\nA **b",
    "$x^2$ \\(y\\)\n\n$$\n\\frac{1}{2}\\sum_{k} \\sqrt{k}\n$$\n\n\\[ z \\]\n",
    "```\nx\n```\n\n```python\nx = 1\n")


def warm_up_steps(langs=WARM_LANGS) -> list:
    """`warm_up` in steps (one an idle callback, a few tens of ms each in Pyodide): zero-argument callables."""
    code = [f"```{lang}\nx\n```\n" for lang in langs]
    return [lambda text=text: render_blocks(text) for text in (*_WARM_SAMPLES, *code)]


def warm_up(langs=WARM_LANGS) -> None:
    """Pay the first-use costs before the first answer: markdown-it's rules, latex2mathml's import and symbol table,
    Pygments' token types and the lexers of `langs` (imported, their regexes compiled), so that the first token of
    the first answer renders in a frame. Call once after the app is shown, in idle time (`warm_up_steps`)."""
    for step in warm_up_steps(langs):
        step()


# --- parsing -----------------------------------------------------------------------------------------------------

def _parse(source: str, base: int, cache: dict) -> list[Block]:
    """Blocks of source[base:] (base is a line start); the last block is rendered with its tail closed."""
    text = source[base:]
    tokens = MD.parse(text)
    patched = patch_tail(text, tokens)
    if patched != text:
        tokens = MD.parse(patched)
    starts = _line_starts(patched)
    _fix_maps(tokens, patched, starts)
    groups = _top_level(tokens)
    out = []
    for n, (a, b) in enumerate(groups):
        first = tokens[a]
        lo = starts[first.map[0]]
        hi = min(starts[first.map[1]] if first.map[1] < len(starts) else len(patched), len(text))
        last = n == len(groups) - 1
        start, end = base + lo, base + hi
        key = (start, source[start:end], last)
        if key in cache:
            out.append(cache[key])
            continue
        node = _Builder(patched, starts, base, len(source)).block(tokens[a:b])
        if first.type == "table_open":
            mark_long_cells(node)
        out.append(Block(first.type.removesuffix("_open"), start, end, source[start:end], node, last))
    return out


def _top_level(tokens) -> list[tuple[int, int]]:
    groups, i = [], 0
    while i < len(tokens):
        j = i
        if tokens[i].nesting == 1:
            depth = 0
            for j in range(i, len(tokens)):
                depth += tokens[j].nesting
                if depth == 0:
                    break
        if tokens[i].map is not None:
            groups.append((i, j + 1))
        i = j + 1
    return groups


def _fix_maps(tokens, text: str, starts: list[int]) -> None:
    """Give a line span to the top-level block tokens a plugin made without one (texmath's `\\[..\\]` blocks)."""
    prev = 0
    for k, t in enumerate(tokens):
        if t.level != 0 or t.nesting == -1:
            continue
        if t.map is None and t.block:
            nxt = next((u.map[0] for u in tokens[k + 1:] if u.map is not None), len(starts))
            a = prev
            while a < nxt - 1 and not text[starts[a]:starts[a + 1]].strip():
                a += 1
            t.map = [a, nxt]
        if t.map is not None:
            prev = t.map[1]


def _line_starts(text: str) -> list[int]:
    starts = [0]
    i = text.find("\n")
    while i >= 0:
        starts.append(i + 1)
        i = text.find("\n", i + 1)
    return starts


# --- tokens -> nodes ---------------------------------------------------------------------------------------------

_TAGS = {"paragraph": "p", "blockquote": "blockquote", "bullet_list": "ul", "ordered_list": "ol", "list_item": "li",
         "table": "table", "thead": "thead", "tbody": "tbody", "tr": "tr", "th": "th", "td": "td",
         "em": "em", "strong": "strong", "s": "s"}
_ENTITY = re.compile(r"&(?:#[xX][0-9a-fA-F]{1,6}|#[0-9]{1,7}|[A-Za-z][A-Za-z0-9]{1,31});")
_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


class _Builder:
    """Builds one block's Node tree from its tokens, finding every character's source offset on the way."""

    def __init__(self, src, starts, base, limit_total):
        self.src, self.starts, self.base = src, starts, base
        self.max = limit_total - base  # offsets past the real source (virtual closers) are clamped

    def off(self, i: int) -> int:
        return self.base + min(i, self.max)

    def block(self, toks) -> Node:
        root = Node("div")
        stack = [root]
        for t in toks:
            if t.nesting == 1:
                el = self.open_tag(t)
                if el is None:  # a hidden paragraph (tight list): its inline goes to the parent
                    stack.append(stack[-1])
                    continue
                stack[-1].children.append(el)
                stack.append(el)
            elif t.nesting == -1:
                stack.pop()
            else:
                stack[-1].children.extend(self.leaf(t))
        return root.children[0] if len(root.children) == 1 else root

    def open_tag(self, t) -> Node | None:
        kind = t.type.removesuffix("_open")
        if kind == "paragraph" and t.hidden:
            return None
        if kind == "heading":
            return Node(t.tag if t.tag in {"h1", "h2", "h3", "h4", "h5", "h6"} else "h6")
        attrs = {}
        if kind == "ordered_list" and t.attrGet("start") is not None:
            attrs["start"] = t.attrGet("start")
        if kind in ("th", "td"):
            align = re.search(r"text-align:\s*(left|right|center)", str(t.attrGet("style") or ""))
            if align:
                attrs["class"] = f"align-{align.group(1)}"
        if kind in ("list_item", "bullet_list", "ordered_list") and "task-list" in str(t.attrGet("class") or ""):
            attrs["class"] = "task-list-item" if kind == "list_item" else "contains-task-list"
        if kind == "link":
            href = safe_href(t.attrGet("href") or "")
            if href is None:
                return Node("span", {"class": "unsafe-link"})
            return Node("a", {"href": href, "target": "_blank", "rel": "noopener noreferrer"})
        return Node(_TAGS.get(kind, "div"), attrs)

    def line_span(self, t) -> tuple[int, int]:
        a = self.starts[t.map[0]]
        b = self.starts[t.map[1]] if t.map[1] < len(self.starts) else len(self.src)
        return a, b

    def leaf(self, t) -> list[Node]:
        if t.type == "inline":
            a, b = self.line_span(t)
            return self.inline(t.children or [], a, b)
        if t.type in ("fence", "code_block"):
            return [self.code(t)]
        if t.type in ("math_block", "math_block_label", "math_block_eqno"):
            a, b = self.line_span(t)
            b = a + len(self.src[a:b].rstrip())  # the formula's span ends at its closing `$$`, not the newline
            return [Node("div", {"class": "math-block"}, [mathml(t.content, True, self.off(a), self.off(b))])]
        if t.type == "hr":
            return [Node("hr")]
        a, b = self.line_span(t) if t.map else (0, 0)
        return [self.aligned(t.content, a, b)[0]] if t.content else []  # html_block & co: only ever text

    def code(self, t) -> Node:
        a, b = self.line_span(t)
        lines = t.content.splitlines(keepends=True)
        first = t.map[0] + (1 if t.type == "fence" else 0)
        offs: list[int] = []
        for k, line in enumerate(lines):
            ln = first + k
            ls = self.starts[ln] if ln < len(self.starts) else b
            le = self.starts[ln + 1] if ln + 1 < len(self.starts) else len(self.src)
            body = line.rstrip("\n")
            src_line = self.src[ls:le].rstrip("\n")
            at = ls + len(src_line) - len(body) if src_line.endswith(body) else ls
            offs.extend(self.off(at + i) for i in range(len(body)))
            if line.endswith("\n"):
                offs.append(self.off(at + len(body)))
        offs.append(offs[-1] + 1 if offs and offs[-1] < self.off(b) else self.off(b) if not offs else offs[-1])
        lang = (t.info or "").split()[0] if t.type == "fence" and t.info.strip() else ""
        lang = re.sub(r"[^A-Za-z0-9_+#.-]", "", lang)[:40]
        head = Node("div", {"class": "code-head"}, [
            Node("span", {"class": "code-lang"}, [chrome_text(lang or "text", self.off(a))]),
            Node("button", {"class": "code-copy", "type": "button", "data-action": "copy"},
                 [chrome_text("Copy", self.off(a))])])
        code = Node("code", {"class": "md-code" + (f" language-{lang}" if lang else ""), "data-lang": lang},
                    highlight(t.content, offs, lang, open_block=not self.closed(t)))
        return Node("div", {"class": "code-block"}, [head, Node("pre", {}, [code])])

    def closed(self, t) -> bool:
        """Whether a fence has its closing line (an indented code block is always whole)."""
        if t.type != "fence" or t.map[1] - t.map[0] < 2 or t.map[1] > len(self.starts):
            return t.type != "fence"
        end = self.starts[t.map[1]] if t.map[1] < len(self.starts) else len(self.src)
        last = self.src[self.starts[t.map[1] - 1]:end].strip(" \t\n>")
        return len(last) >= len(t.markup) and set(last) == {t.markup[0]}

    # -- inline --

    def inline(self, children, pos: int, limit: int) -> list[Node]:
        root = Node("span")
        stack = [root]
        for t in children:
            if t.nesting == 1:
                el = self.open_tag(t)
                stack[-1].children.append(el)
                stack.append(el)
            elif t.nesting == -1:
                stack.pop()
                if t.type == "link_close":
                    pos = self.skip_link_tail(pos, limit)
            elif t.type in ("text", "code_inline"):
                node, pos = self.aligned(t.content, pos, limit)
                if t.type == "code_inline":
                    node = Node("code", {"class": "md-inline-code"}, [node])
                    while pos < limit and self.src[pos] == "`":
                        pos += 1
                stack[-1].children.append(node)
            elif t.type in ("softbreak", "hardbreak"):
                nl = self.src.find("\n", pos, limit)
                nl = nl if nl >= 0 else pos
                if t.type == "hardbreak":
                    stack[-1].children.append(Node("br"))
                stack[-1].children.append(text_node("\n", [self.off(nl), self.off(nl + 1)], self.off(nl)))
                pos = nl + 1
            elif t.type.startswith("math_inline"):
                at = self.src.find(t.content, pos, limit)
                at = at if at >= 0 else pos
                end = at + len(t.content)
                while at > pos and self.src[at - 1] in "$(" and (self.src[at - 1] == "$" or self.src[at - 2] == "\\"):
                    at -= 1 if self.src[at - 1] == "$" else 2
                while end < limit and self.src[end] in "$\\)":
                    end += 1
                stack[-1].children.append(Node("span", {"class": "math-inline"},
                                               [mathml(t.content, False, self.off(at), self.off(end))]))
                pos = end
            elif t.type == "image":
                at = self.src.find("![", pos, limit)
                at = at if at >= 0 else pos
                pos = self.skip_link_tail(self.skip_brackets(at + 1, limit, "[", "]"), limit, bracket=False)
                alt = "".join(c.content for c in (t.children or []))
                stack[-1].children.append(image_placeholder(t.attrGet("src") or "", alt, self.off(at), self.off(pos)))
            elif t.type == "html_inline" and "task-list-item-checkbox" in t.content:
                attrs = {"type": "checkbox", "class": "task-list-item-checkbox", "disabled": ""}
                if 'checked="checked"' in t.content:
                    attrs["checked"] = ""
                stack[-1].children.append(Node("input", attrs))
                close = self.src.find("]", pos, limit)
                pos = close + 1 if close >= 0 else pos
            elif t.content:  # anything else shows its content as text
                node, pos = self.aligned(t.content, pos, limit)
                stack[-1].children.append(node)
        tail = self.src[pos:limit].rstrip("\n")
        if tail and not tail.strip(" \t") and stack[-1] is root:  # trailing blanks: kept, so the text stays exact
            root.children.append(text_node(tail, [self.off(pos + i) for i in range(len(tail) + 1)], self.off(pos)))
        return root.children

    def skip_brackets(self, i: int, limit: int, op: str, cl: str) -> int:
        """From `op` at i, the index after its matching `cl` (backslash escapes skipped), else i."""
        if i >= limit or self.src[i] != op:
            return i
        depth, j = 0, i
        while j < limit:
            c = self.src[j]
            if c == "\\":
                j += 2
                continue
            depth += (c == op) - (c == cl)
            j += 1
            if depth == 0:
                return j
        return i

    def skip_link_tail(self, i: int, limit: int, bracket: bool = True) -> int:
        """After a link's text: past `]` and its `(destination "title")`, `[ref]` or an autolink's `>`."""
        if i < limit and self.src[i] == ">":
            return i + 1
        if bracket:
            if i >= limit or self.src[i] != "]":
                return i
            i += 1
        if i < limit and self.src[i] == "(":
            return self.skip_brackets(i, limit, "(", ")")
        if i < limit and self.src[i] == "[":
            return self.skip_brackets(i, limit, "[", "]")
        return i

    def aligned(self, text: str, pos: int, limit: int) -> tuple[Node, int]:
        """A text node for `text`, found in src[pos:limit] verbatim or through escapes, entities and line breaks."""
        first, n = text[:1], len(text)
        tries = 0
        for j in range(pos, limit):
            c = self.src[j]
            if c != first and c not in "\\&\n":
                continue
            if j + n <= min(limit, self.max) and self.src.startswith(text, j):
                # verbatim, the common case: no per-character offsets to find or to keep
                return text_node(text, [self.off(j), self.off(j + n)], self.off(j)), j + n
            got = self.match_at(text, j, limit)
            if got is not None:
                return text_node(text, [self.off(o) for o in got], self.off(got[0])), got[-1]
            tries += 1
            if tries > 64:
                break
        return text_node(text, None, self.off(pos)), pos

    def match_at(self, text: str, j: int, limit: int) -> list[int] | None:
        src, offs, i, n = self.src, [], 0, len(text)
        while i < n:
            if j >= limit:
                return None
            c, t = src[j], text[i]
            if c == "\\" and j + 1 < limit and src[j + 1] == t and t in _PUNCT:
                offs.append(j)
                i, j = i + 1, j + 2
            elif c == "&" and (m := _ENTITY.match(src, j, limit)) and text.startswith(html.unescape(m[0]), i):
                k = len(html.unescape(m[0]))
                offs.extend([j] * k)
                i, j = i + k, m.end()
            elif c == t:
                offs.append(j)
                i, j = i + 1, j + 1
            elif c == "\n" and t == " " and i:
                offs.append(j)
                i, j = i + 1, j + 1
                while j < limit and src[j] in " \t>":
                    j += 1
            else:
                return None
        offs.append(j)
        return offs
