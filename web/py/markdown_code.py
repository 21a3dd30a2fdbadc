"""Fenced and indented code: Pygments' highlighting as `markdown_parts.Node`s, lexed a line at a time while the
block is being written (plain Python, no `js`). markdown_nodes builds a code block around `highlight`."""

from __future__ import annotations

from markdown_parts import Node, text_node

__all__ = ["highlight", "CHUNK_LINES", "MAX_HIGHLIGHT"]

_LEXERS: dict[str, object] = {}
MAX_HIGHLIGHT = 40_000  # characters; longer code stays plain (its cost would be paid at every streamed token)


def _lexer(lang: str):
    if lang not in _LEXERS:
        try:
            from pygments.lexers import get_lexer_by_name
            from pygments.util import ClassNotFound
            try:
                _LEXERS[lang] = get_lexer_by_name(lang, stripnl=False, ensurenl=False)
            except ClassNotFound:
                _LEXERS[lang] = None
        except ImportError:  # Pygments not installed: plain code
            _LEXERS[lang] = None
    return _LEXERS[lang]


def _css_class(ttype) -> str:
    from pygments.token import STANDARD_TYPES
    while ttype is not None and ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    return STANDARD_TYPES.get(ttype, "") if ttype is not None else ""


CHUNK_LINES = 16
# A newline lexed as one of these classes (plain text, whitespace) stands outside any string, comment or other
# construct spanning lines: the lines before it lex the same whatever comes after (see `highlight`).
_NEUTRAL = frozenset({"", "w"})
_FROZEN: dict[tuple[str, int], tuple[str, int, Node, int]] = {}  # (lang, offset) -> (text, end offset, chunk, lines)


def highlight(code: str, offs, lang: str, open_block: bool = False) -> list[Node]:
    """Children of <code>: Pygments token spans (class = Pygments' short name, e.g. `k`, `s2`) and text nodes.
    `offs` gives the source offset of each character of `code` (len(code)+1 entries; a list or a range).

    A closed block is lexed whole, exactly. A code block still being written (`open_block`) is lexed from where
    the frames before froze it: its lines up to the last newline the lexer saw outside any multi-line construct
    are frozen into `span.code-chunk`s of up to CHUNK_LINES lines, memoised by source offset and coming back as the
    same Node objects at every frame (the view keeps their DOM and HTML), so a frame lexes the lines written since
    (usually the one being written), never again the ones before. Frozen lines were lexed with the text after them
    in view, as a whole lex would; once closed, the block is lexed whole."""
    if len(code) > MAX_HIGHLIGHT:
        lang = ""
    if not open_block:
        return _run_nodes(code, offs, _runs(code, lang), 0, len(code))
    out: list[Node] = []
    a = prev = 0
    hit = None
    while a < len(code):
        found = _FROZEN.get((lang, offs[a]))
        if found is None or not code.startswith(found[0], a) or offs[a + len(found[0])] != found[1]:
            break
        out.append(found[2])
        prev, hit, a = a, found, a + len(found[0])
    rest, rest_offs = code[a:], offs[a:]
    runs = _runs(rest, lang)
    cut = _freeze_point(rest, runs)
    if cut:
        nodes, lines, start = _run_nodes(rest, rest_offs, runs, 0, cut), rest.count("\n", 0, cut), a
        if hit is not None and hit[3] + lines <= CHUNK_LINES:  # the last frozen chunk takes these lines too
            out.pop()
            nodes, lines, start = [*hit[2].children, *nodes], hit[3] + lines, prev
        chunk = Node("span", {"class": "code-chunk"}, nodes)
        if len(_FROZEN) > 4096:
            _FROZEN.clear()
        _FROZEN[(lang, offs[start])] = (code[start:a + cut], offs[a + cut], chunk, lines)
        out.append(chunk)
    if cut < len(rest):
        out.append(Node("span", {"class": "code-chunk"}, _run_nodes(rest, rest_offs, runs, cut, len(rest))))
    return out


def _freeze_point(code: str, runs) -> int:
    """Just after the last newline of `code` lexed as plain text or whitespace and before any error token (which is
    what a lexer makes of a construct not yet closed, such as `/*` before its `*/`); 0: none."""
    end = next((k for k, run in enumerate(runs) if run[0] == "err"), len(runs))
    for cls, a, b in reversed(runs[:end]):
        at = code.rfind("\n", a, b)
        if at >= 0 and cls in _NEUTRAL:
            return at + 1
    return 0


def _runs(code: str, lang: str) -> list[tuple[str, int, int]]:
    """Pygments' tokens of `code` as (css class, start, end), adjacent ones of the same class joined."""
    lexer = _lexer(lang.lower()) if lang else None
    if lexer is None:
        return [("", 0, len(code))] if code else []
    runs: list[tuple[str, int, int]] = []
    for index, ttype, value in lexer.get_tokens_unprocessed(code):
        if not value:
            continue
        cls = _css_class(ttype)
        if runs and runs[-1][0] == cls and runs[-1][2] == index:
            runs[-1] = (cls, runs[-1][1], index + len(value))
        else:
            runs.append((cls, index, index + len(value)))
    return runs


def _run_nodes(code: str, offs, runs, lo: int, hi: int) -> list[Node]:
    """Nodes of the runs' parts within code[lo:hi]: a span per classed run, a text node for plain text."""
    out = []
    for cls, a, b in runs:
        a, b = max(a, lo), min(b, hi)
        if a < b:
            t = text_node(code[a:b], offs[a:b + 1], offs[a])
            out.append(Node("span", {"class": cls}, [t]) if cls else t)
    return out
