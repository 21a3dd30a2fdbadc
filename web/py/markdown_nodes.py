"""markdown-it tokens of one top-level block -> its `markdown_parts.Node` tree, with the source offset of every
character (plain Python, no `js`). markdown_render parses and cuts the token stream into blocks; this builds each.
"""

from __future__ import annotations

import html
import re

from markdown_code import highlight
from markdown_parts import Node, chrome_text, image_placeholder, mathml, safe_href, text_node

__all__ = ["NodeBuilder"]

# --- tokens -> nodes ---------------------------------------------------------------------------------------------

_TAGS = {"paragraph": "p", "blockquote": "blockquote", "bullet_list": "ul", "ordered_list": "ol", "list_item": "li",
         "table": "table", "thead": "thead", "tbody": "tbody", "tr": "tr", "th": "th", "td": "td",
         "em": "em", "strong": "strong", "s": "s"}
_ENTITY = re.compile(r"&(?:#[xX][0-9a-fA-F]{1,6}|#[0-9]{1,7}|[A-Za-z][A-Za-z0-9]{1,31});")
_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


class NodeBuilder:
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
        first = t.map[0] + (1 if t.type == "fence" else 0)
        top = self.starts[first] if first < len(self.starts) else b
        if t.content and top + len(t.content) <= self.max and self.src.startswith(t.content, top):
            # the code is the source verbatim (a fence at the margin): no per-character list to build
            offs = range(self.off(top), self.off(top) + len(t.content) + 1)
        else:
            offs = self.code_offsets(t.content, first, b)
        lang = (t.info or "").split()[0] if t.type == "fence" and t.info.strip() else ""
        lang = re.sub(r"[^A-Za-z0-9_+#.-]", "", lang)[:40]
        head = Node("div", {"class": "code-head"}, [
            Node("span", {"class": "code-lang"}, [chrome_text(lang or "text", self.off(a))]),
            Node("button", {"class": "code-copy", "type": "button", "data-action": "copy"},
                 [chrome_text("Copy", self.off(a))])])
        code = Node("code", {"class": "md-code" + (f" language-{lang}" if lang else ""), "data-lang": lang},
                    highlight(t.content, offs, lang, open_block=not self.closed(t)))
        return Node("div", {"class": "code-block"}, [head, Node("pre", {}, [code])])

    def code_offsets(self, content: str, first: int, b: int) -> list[int]:
        """The source offset of each character of code whose lines start at line `first` (indentation or container
        markers stripped), and its end; `b`: the block's end."""
        offs: list[int] = []
        for k, line in enumerate(content.splitlines(keepends=True)):
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
        return offs

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
