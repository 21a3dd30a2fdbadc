"""Markdown of assistant answers -> DOM-neutral blocks, while they stream (plain Python, no `js`).

    stream = MarkdownStream()            # one per message
    blocks = stream.update(source)       # at each frame: the whole source so far; returns list[Block]

Each top-level `Block` has a stable `key` (source start, kind), its span `[start, end)` and a `node` tree
(`markdown_parts.Node`). `update` returns the same Block object for a block whose text did not change, so the view
keeps its DOM (`if old is new`) and rebuilds only the rest - in practice the last one or two blocks. Only the last
two blocks of the previous parse are parsed again - the last one alone when a blank line closed the one before it
for good or it is a code fence (`_settled`) - (`stream.reparsed` counts them, `stream.parsed_chars` their characters) and the blocks
before them, `stream.stable`, are not even looked at (the view skips them too), so a frame costs the tail, not the
answer; an unchanged source (the final text at `done`) parses nothing. The last
block is rendered as what it will become: an open fence is a code block, an unclosed `**`, `_`, `~~`, `` ` `` or
link at the very end is closed virtually, a half-typed table delimiter row is completed.

CommonMark + GFM tables, strikethrough, task lists, autolinks; `$..$`, `$$..$$`, `\\(..\\)`, `\\[..\\]` as MathML;
fenced code highlighted with Pygments. Raw HTML is text (`html=False`), links are http(s)/mailto only, images are
click-to-load placeholders (markdown_parts). Pins: `source_offset`, `selection_range` and `marks` map between DOM
positions (text node + offset) and source offsets. `warm_up()` pays the first-use imports ahead (after boot).
"""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.gfm_autolink import gfm_autolink_plugin
from mdit_py_plugins.tasklists import tasklists_plugin
from mdit_py_plugins.texmath import texmath_plugin

from markdown_append import extend_paragraph
from markdown_inline import ENV_KEY, InlinePrefix, inline_rule
from markdown_nodes import NodeBuilder
from markdown_parts import mark_long_cells, marks, patch_tail, selection_range, source_offset, text_nodes

__all__ = ["Block", "MarkdownStream", "render_blocks", "passage_text", "warm_up", "warm_up_steps", "source_offset",
           "selection_range",
           "marks", "text_nodes"]


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable(["table", "strikethrough"])
    md.use(dollarmath_plugin, double_inline=True).use(texmath_plugin, delimiters="brackets")
    # The open block is parsed again at every frame, and each parse normalises each of its links anew (punycode
    # per host): pure functions of the URL, so remembered.
    md.normalizeLink = lru_cache(maxsize=512)(md.normalizeLink)
    md.normalizeLinkText = lru_cache(maxsize=512)(md.normalizeLinkText)
    md.core.ruler.at("inline", inline_rule)  # the open paragraph's settled text is inline-parsed once
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
        self.inline = InlinePrefix()  # the open paragraph's text that is inline-parsed once (markdown_inline)

    def update(self, source: str) -> list[Block]:
        """Nothing here is O(answer) when text is appended: the parse starts at the second-to-last block (or the
        last, `_settled`) and only the blocks from there on are looked at (no cache of the whole list, no walk over the finished blocks)."""
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
            n, settled = 0, False
            if self.blocks and source.startswith(self.source):
                n = max(0, len(self.blocks) - 2)  # only the tail may change when text is appended (module doc)
                settled = len(self.blocks) >= 2 and _settled(self.blocks[n - 1].end if n else 0, self.blocks[-2],
                                                             self.blocks[-1], source)
            fresh = self._parse_from(n + settled, source)
            if settled and not fresh:  # the last block is gone: the one before is the last now, and renders so
                fresh = self._parse_from(n, source)
            else:
                n += settled
            self.blocks[n:] = fresh
        self.reparsed, self.stable, self.source = len(fresh), n, source
        return list(self.blocks)

    def _parse_from(self, n: int, source: str) -> list[Block]:
        """The blocks of `source` from where block `n` of the last parse starts (the blocks there are the cache)."""
        base = self.blocks[n - 1].end if n else 0
        cache = {_cache_key(self.source, b.start, b.end, b.last): b for b in self.blocks[n:]}
        fresh = _parse(source, base, cache, self.inline)
        self.rendered = sum(1 for b in fresh if cache.get(_cache_key(source, b.start, b.end, b.last)) is not b)
        self.parsed_chars = len(source) - base
        return fresh


# Blocks that a blank line ends for good: no text after it can join them, nor parse otherwise for coming after them
# (unlike a list or an indented code block, which an indented line after a blank one continues).
_CLOSED_BY_BLANK = frozenset({"paragraph", "heading", "fence", "table", "blockquote", "hr", "math_block"})
# A paragraph opening a display formula not yet closed becomes one when it is, blank lines or not.
_MATH_OPENERS = ("$$", "\\[")


def _settled(base: int, before: Block, last: Block, source: str) -> bool:
    """Whether appended text can change only `last`: `before` is closed by the blank lines between them - or `last`
    is a top-level code fence whose opening line is complete, which ends any block before it whatever follows -
    and no link reference definition (`[x]: url`, which links in `last` may use) stands in `source[base:last.start]`,
    the text a parse from `before` would see first."""
    closed = (last.kind == "fence" and "\n" in last.text) or (
        before.kind in _CLOSED_BY_BLANK and last.start > before.end and not source[before.end:last.start].strip())
    return closed and "]:" not in source[base:last.start] and not before.text.lstrip().startswith(_MATH_OPENERS)


def render_blocks(source: str) -> list[Block]:
    """All blocks of a finished (or one-off) source."""
    return _parse(source, 0, {})


@lru_cache(maxsize=256)
def passage_text(source: str, start: int, end: int) -> str:
    """What a reader sees of source `[start, end)` (a pin's passage) in the rendered answer: the text its marks
    cover, without the Markdown syntax around it (`**`, backquotes); where the source between two runs of that text
    holds a space or a line break (a table's cell border, a new block), one space."""
    runs: list[str] = []
    last_end = None
    last_atom = None
    for block in render_blocks(source):
        if block.end <= start or block.start >= end:
            continue
        for node, lo, hi in marks(block.node, start, end):
            text = node.text[lo:hi]
            if node.atom is not None:  # a formula's MathML text reads badly ("mc2"): its TeX, once per formula
                if (node.start, node.end) == last_atom:
                    continue
                last_atom = (node.start, node.end)
                text = _tex(source[node.start:node.end]) or text
            begin = source_offset(node, lo)
            if runs and not runs[-1][-1:].isspace() and any(c.isspace() for c in source[last_end:begin]):
                runs.append(" ")
            runs.append(text)
            last_end = source_offset(node, hi, end=True)
    return " ".join("".join(runs).split())


def _tex(construct: str) -> str | None:
    """`E = mc^2` of `$E = mc^2$` (or `$$..$$`, `\\(..\\)`, `\\[..\\]`); None for what is not a formula."""
    for opener, closer in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(construct) > len(opener) + len(closer) and construct.startswith(opener) and construct.endswith(closer):
            return construct[len(opener):-len(closer)].strip()
    return None


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

def _parse(source: str, base: int, cache: dict, inline: InlinePrefix | None = None) -> list[Block]:
    """Blocks of source[base:] (base is a line start); the last block is rendered with its tail closed. `inline`:
    the stream's open paragraph's kept inline tokens."""
    text = source[base:]
    tokens = MD.parse(text, {ENV_KEY: inline} if inline else {})
    patched = patch_tail(text, tokens)
    if patched != text:
        tokens = MD.parse(patched, {ENV_KEY: inline} if inline else {})
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
        key = _cache_key(source, start, end, last)
        if key in cache:
            out.append(cache[key])
            continue
        node = NodeBuilder(patched, starts, base, len(source)).block(tokens[a:b])
        if first.type == "table_open":
            mark_long_cells(node)
        out.append(Block(first.type.removesuffix("_open"), start, end, source[start:end], node, last))
    return out


def _cache_key(source: str, start: int, end: int, last: bool) -> tuple:
    """What a block's tree depends on: its text, and for the last block all the text after its start (the text
    after its span, such as a lone backtick, can change how its unfinished end is closed, and so the whole)."""
    return start, source[start:] if last else source[start:end], last


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
