"""The pieces of rendered Markdown (plain Python, no `js`): the DOM-neutral `Node`, the allow-lists, URL checks,
LaTeX -> MathML, the virtual closing of a streaming tail and the pin mapping (DOM position
<-> source offset). `markdown_render` builds blocks out of these; markdown_html writes a `Node`
tree as escaped HTML for the view (tags and attribute names only from the allow-lists below).

A text node (`tag is None`) carries the source span `[start, end)` of its characters. `offsets is None` means the
text is a verbatim slice of the source (`text == source[start:end]`); otherwise `offsets[i]` is the source offset of
character i (len(text) + 1 entries, the last one is the end). `chrome` text (a language label, "Copy", an image
placeholder's caption) is not answer text: selections map it to its construct's edge and highlights skip it. A text
node's `children` and `offsets` are tuples, not lists: the cycle collector stops tracking a tuple of ints, and a long
answer keeps tens of thousands of text nodes alive (each full collection walks every tracked object).

An atomic construct (a formula, rendered as MathML or shown as its LaTeX when it does not parse; an image
placeholder) cannot be half selected: its text nodes carry the construct's whole span `[start, end)` and
`atom = (first, last)` (whether the node is the construct's first / last text node). A selection boundary inside
one widens to the construct's edge (`source_offset(..., end=True)` for a selection's end), and a range that touches
it marks all of it. The `<math>` element carries the span too (`start`, `end`): the view highlights it whole.
"""

from __future__ import annotations

import bisect
import functools
import html
import re
from urllib.parse import urlsplit

MATHML_NS = "http://www.w3.org/1998/Math/MathML"

HTML_TAGS = frozenset(
    "div p h1 h2 h3 h4 h5 h6 blockquote ul ol li table thead tbody tr th td hr br em strong s a code pre span "
    "button input".split())
MATHML_TAGS = frozenset(
    "math mrow mi mn mo ms mtext mspace msub msup msubsup mfrac msqrt mroot mover munder munderover mtable mtr "
    "mtd mstyle mpadded mphantom menclose merror mmultiscripts mprescripts none semantics annotation".split())
HTML_ATTRS = frozenset(
    "class href target rel start type checked disabled data-src data-alt data-host data-lang data-action title".split())
MATHML_ATTRS = frozenset(
    "display mathvariant stretchy fence separator accent accentunder lspace rspace linethickness columnalign "
    "rowspacing columnspacing columnlines rowlines frame width height depth form movablelimits largeop symmetric "
    "minsize maxsize notation displaystyle scriptlevel open close separators encoding".split())


class Node:
    """An element (`tag`, `attrs`, `children`, `ns`) or a text node (`tag is None`, `text`) of rendered Markdown."""

    __slots__ = ("tag", "attrs", "children", "text", "start", "end", "offsets", "ns", "chrome", "atom")

    def __init__(self, tag=None, attrs=None, children=None, text="", start=0, end=0, offsets=None, ns=None,
                 chrome=False, atom=None):
        allowed = MATHML_ATTRS if ns == MATHML_NS else HTML_ATTRS
        tags = MATHML_TAGS if ns == MATHML_NS else HTML_TAGS
        if tag is not None and tag not in tags:
            raise ValueError(f"tag not allowed: {tag}")
        self.tag = tag
        self.attrs = {k: str(v) for k, v in (attrs or {}).items() if k in allowed}
        self.children = children if children is not None else [] if tag is not None else ()
        self.text = text
        self.start, self.end, self.offsets = start, end, offsets
        self.ns = ns
        self.chrome = chrome
        self.atom: tuple[bool, bool] | None = atom

    def visible_text(self) -> str:
        if self.tag is None:
            return self.text
        return "".join(c.visible_text() for c in self.children)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def __eq__(self, other):
        return isinstance(other, Node) and all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self):
        if self.tag is None:
            return f"T({self.text!r}@{self.start}:{self.end})"
        return f"<{self.tag} {self.attrs}>{self.children!r}"


def text_node(text: str, offs: list[int] | None, start: int, chrome: bool = False) -> Node:
    """A text node from per-character offsets (len(text)+1 entries); stored compactly when they are verbatim."""
    if not offs:
        return Node(text=text, start=start, end=start, offsets=(start,) * (len(text) + 1), chrome=chrome)
    a, b = offs[0], offs[-1]
    return Node(text=text, start=a, end=b, offsets=None if b - a == len(text) else tuple(offs), chrome=chrome)


def chrome_text(text: str, at: int) -> Node:
    return text_node(text, None, at, chrome=True)


# --- URLs --------------------------------------------------------------------------------------------------------

_SAFE_LINK = re.compile(r"(?:https?://|mailto:)[^\x00-\x20\x7f]*\Z", re.IGNORECASE)
_SAFE_IMAGE = re.compile(r"https?://[^\x00-\x20\x7f]+\Z", re.IGNORECASE)


def safe_href(url: str) -> str | None:
    """`url` if it is an absolute http(s) or mailto URL with no control character or space anywhere, else None.

    markdown-it has already decoded entities/escapes and percent-encoded the URL, so `jav&#x09;ascript:` arrives as
    `jav%09ascript:` (no scheme we allow) and `JaVaScRiPt:` as itself: both fail the prefix test, as does any
    relative or protocol-relative URL."""
    return url if isinstance(url, str) and _SAFE_LINK.match(url) else None


def _atom_text(text: str, start: int, end: int, chrome: bool = False) -> Node:
    """The text of a whole atomic construct `[start, end)` (one node: first and last)."""
    return Node(text=text, start=start, end=end, offsets=(start,) * len(text) + (end,), chrome=chrome,
                atom=(True, True))


def image_placeholder(url: str, alt: str, start: int, end: int) -> Node:
    """A button the view turns into an <img> only when clicked (images are never fetched on their own)."""
    if not _SAFE_IMAGE.match(url or ""):
        return Node("span", {"class": "img-blocked"},
                    [_atom_text(f"[image: {alt}]" if alt else "[image]", start, end, chrome=True)])
    host = urlsplit(url).hostname or "?"
    return Node("button", {"class": "img-placeholder", "type": "button", "data-src": url, "data-alt": alt,
                           "data-host": host},
                [_atom_text(f"Image from {host} — click to load", start, end, chrome=True)])


LONG_CELL = 24  # characters: a table cell with more text gets class `cell-long` (a wider minimum, see markdown.css)


def mark_long_cells(table: Node) -> None:
    """Class `cell-long` on the cells of prose: a table too wide for its box scrolls instead of wrapping them into
    one word per line."""
    for n in table.walk():
        if n.tag in ("td", "th") and len(n.visible_text()) > LONG_CELL:
            n.attrs["class"] = " ".join(filter(None, [n.attrs.get("class"), "cell-long"]))


# --- math --------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def mathml(latex: str, display: bool, start: int, end: int) -> Node:
    """<math> for `latex` (latex2mathml), every tag and attribute checked against the MathML allow-list; text nodes
    map to the whole construct `[start, end)` (atomic, see the module doc). Unparsable LaTeX shows as code with
    class `math-error`. Memoised: the open block's formulas come back at every frame, and nothing changes a built
    tree (the same Node object may then stand in several parses' trees)."""
    try:
        root = _converted(latex, display)
    except Exception:  # noqa: BLE001 - any failure of the converter: show the source
        return Node("code", {"class": "math-error"}, [_atom_text(latex, start, end)])
    node = _from_xml(root, start, end)
    node.start, node.end = start, end
    texts = list(text_nodes(node))
    for i, t in enumerate(texts):
        t.atom = (i == 0, i == len(texts) - 1)
    return node


@functools.lru_cache(maxsize=256)
def _converted(latex: str, display: bool):
    """latex2mathml's element (only read afterwards). `mathml` memoises a formula's tree at its place in the source;
    this converts the same LaTeX once wherever it stands (`$n$` written ten times in an answer)."""
    from latex2mathml.converter import convert_to_element
    return convert_to_element(latex, display="block" if display else "inline")


def _from_xml(el, start: int, end: int) -> Node:
    """Node tree of latex2mathml's element (its text holds character references such as `&#x00029;`: decoded)."""
    tag = el.tag.rsplit("}", 1)[-1]
    if tag not in MATHML_TAGS:
        tag = "mrow"
    kids = []
    for part in [el.text] + [x for child in el for x in (child, child.tail)]:
        if isinstance(part, str):
            if part:
                part = html.unescape(part)
                kids.append(Node(text=part, start=start, end=end, offsets=(start,) * len(part) + (end,)))
        elif part is not None:
            kids.append(_from_xml(part, start, end))
    return Node(tag, dict(el.attrib), kids, ns=MATHML_NS)


# --- the open tail -----------------------------------------------------------------------------------------------

_DELIM_ROW = re.compile(r"[ \t]*\|?[ \t]*:?-*:?[ \t]*(?:\|[ \t]*:?-*:?[ \t]*)*\Z")
_OPEN_LINK = re.compile(r"\]\([^()\s]*\Z")


def patch_tail(text: str, tokens) -> str:
    """`text` with its unfinished end closed, when the document ends inside inline text (not in code or math)."""
    last = next((t for t in reversed(tokens) if t.nesting != -1), None)
    if last is None or last.type != "inline" or text.endswith("\n"):
        return text
    line_start = text.rfind("\n") + 1
    row = text[line_start:]
    if "-" in row and line_start and _DELIM_ROW.match(row):
        header = text[text.rfind("\n", 0, line_start - 1) + 1:line_start - 1]
        if "|" in header:  # a table's header row above: the row being typed is its delimiter row
            cells = [c for c in re.split(r"(?<!\\)\|", header.strip().strip("|"))]
            return text[:line_start] + "|" + "---|" * len(cells)
    return _close_inline(text, last.content)


_DELIMITER = re.compile(r"[\\`*_~]")


def _close_inline(text: str, content: str) -> str:
    stack: list[tuple[str, int, int]] = []  # (char, run length, index in content after the run)
    code = code_at = 0  # length and index of the open backtick run
    i, n = 0, len(content)
    while i < n:
        found = _DELIMITER.search(content, i)  # a regex jumps over plain text (this runs at every frame)
        if found is None:
            break
        i = found.start()
        c = content[i]
        if c == "\\":
            i += 1 if code else 2  # an escape, except inside a code span
            continue
        j = i
        while j < n and content[j] == c:
            j += 1
        run = j - i
        if c == "`":
            code, code_at = (0, 0) if code == run else (code, code_at) if code else (run, i)
        elif c in "*_~" and not code:
            before = content[i - 1] if i else " "
            after = content[j] if j < n else " "
            left, right = not after.isspace(), not before.isspace()
            intraword = c == "_" and before.isalnum() and after.isalnum()
            if right and not intraword and stack and stack[-1][0] == c and stack[-1][1] == run:
                stack.pop()
            elif (left or j == n) and not intraword and (c != "~" or run == 2):
                stack.append((c, run, j))
        i = j
    if code:  # close the code span, or drop its opener when nothing follows it yet
        return text[:len(text) - code] if code_at + code == n else text + "`" * code
    closers = ")" if _OPEN_LINK.search(content) else ""
    if stack and stack[-1][2] == n:  # an opener with nothing after it yet: drop it
        text = text[:len(text) - stack.pop()[1]]
    body = text.rstrip(" \t")
    closers += "".join(c * r for c, r, _ in reversed(stack))
    return body + closers if closers else text


# --- pins: DOM positions <-> source offsets ----------------------------------------------------------------------

def text_nodes(node: Node):
    """The text nodes of a tree in document order (the order of their text in the DOM)."""
    return (n for n in node.walk() if n.tag is None)


def source_offset(meta: Node, offset: int, end: bool = False) -> int:
    """Source offset of DOM position `offset` inside the text node made from `meta`. In an atomic construct (math,
    an image) a position maps to the construct's start, or to its end when it is a selection's `end` - except at
    the construct's very edges (before its first character / after its last one), which stay what they are."""
    offset = max(0, min(offset, len(meta.text)))
    if meta.atom is not None:
        first, last = meta.atom
        if end:
            return meta.start if first and offset == 0 else meta.end
        return meta.end if last and offset >= len(meta.text) else meta.start
    if meta.chrome:
        return meta.start
    if meta.offsets is None:
        return meta.start + offset
    return meta.offsets[offset]


def selection_range(start_meta: Node, start_off: int, end_meta: Node, end_off: int) -> tuple[int, int]:
    """The source `[start, end)` of a DOM selection from (text node, offset) to (text node, offset); a boundary
    inside a formula or an image widens the range to the construct's whole span."""
    a, b = source_offset(start_meta, start_off), source_offset(end_meta, end_off, end=True)
    return (a, b) if a <= b else (b, a)


def marks(roots, start: int, end: int) -> list[tuple[Node, int, int]]:
    """Where to draw the source range `[start, end)`: (text node meta, from, to) offsets inside each text node it
    touches, in document order. Call once per pin; overlapping pins simply give overlapping marks."""
    out = []
    for root in ([roots] if isinstance(roots, Node) else roots):
        for n in text_nodes(root):
            if n.chrome or n.end <= start or n.start >= end or not n.text:
                continue
            if n.atom is not None:  # a formula is marked whole or not at all
                out.append((n, 0, len(n.text)))
                continue
            if n.offsets is None:
                lo, hi = max(start, n.start) - n.start, min(end, n.end) - n.start
            else:
                lo = bisect.bisect_left(n.offsets, start, 0, len(n.text))
                hi = bisect.bisect_left(n.offsets, end, 0, len(n.text))
            if hi > lo:
                out.append((n, lo, hi))
    return out
