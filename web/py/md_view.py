"""Rendered Markdown of one message in the DOM (the blocks of markdown_render -> elements), with pin anchors.

* Streaming: `update(source)` at each frame. markdown_render.MarkdownStream returns the same Block object for a
  block whose text did not change: its DOM is kept (`old is new`), only changed blocks are rebuilt, gone ones
  removed; the leading blocks it reports `stable` are not even visited, so a frame costs the tail, not the answer.
  Inside a rebuilt block, the parts that did not change (finished `span.code-chunk`s of a code block, which come
  back as the same Node objects, and equal table rows, list items, quotes and formulas) keep their DOM (`_PARTS`).
* Finished: `show(source, anchors)` (one-off with `render_blocks` when nothing was streamed here). Each pin anchor
  `(pin_id, start, end)` (source offsets) is drawn as `<mark class=pin-anchor data-pin-id>` around the DOM text it
  covers (`markdown_parts.marks`), across formatting; where pins overlap, the text is wrapped once with class
  `pin-overlap` (darker) and opens the shorter pin. A formula is atomic: a pin touching its source span wraps the
  whole `<math>` element in one `<mark class="pin-anchor pin-math">` (no <mark> inside MathML).
* Pins: `source_range(range)` maps a DOM Range inside the body to source `[start, end)` (each DOM Text node made
  here is remembered with its Node meta and the offset of its first character in that meta: a block's `texts` is
  one flat list of (node, meta, offset) triples, not a tuple per node, to keep the objects the collector walks few).

* Loading: the renderer (markdown-it and its plugins, ~0.5-0.7 s to import in Pyodide; markdown_parts' `html` and
  `urllib.parse` alone ~0.2 s) is imported by `load()` after the page is usable, not before (boot.js unpacks its
  wheels once the composer shows); until then message_view shows answers as plain text and `loaded()` is False.

Model text only ever becomes Text nodes; elements and attributes come from the Node tree (allow-listed there).
"""

from __future__ import annotations

import dom

__all__ = ["MarkdownBody", "load", "loaded"]

_renderer = None  # the markdown_render module, once `load()` imported it


def load() -> None:
    """Import the renderer (its wheels must be unpacked by then)."""
    global _renderer
    import markdown_render
    _renderer = markdown_render


def loaded() -> bool:
    return _renderer is not None


class _Shown:
    __slots__ = ("block", "node", "texts", "parts", "pins")

    def __init__(self, block, node, texts, parts, pins):
        self.block, self.node, self.texts, self.parts, self.pins = block, node, texts, parts, pins


class MarkdownBody:
    """The `.md` body of one assistant message."""

    def __init__(self, container, replacing: bool = False) -> None:
        """`replacing`: the container shows something else (the plain text shown while the renderer loaded); it is
        cleared in the same frame the Markdown is put in, so nothing flashes empty."""
        self.container = container
        self.replacing = replacing
        if not replacing:
            container.classList.add("md")
        self.stream = None  # a markdown_render.MarkdownStream once streamed here
        self.entries: list[_Shown] = []  # in block order; their nodes are the container's children, in order
        self.anchors: tuple = ()  # the pins the entries were drawn with
        self.builds = 0  # blocks built so far (tests and benchmarks read it)

    def update(self, source: str) -> None:
        if self.stream is None:
            self.stream = _renderer.MarkdownStream()
        blocks = self.stream.update(source)
        self._show(blocks, (), self.stream.stable)

    def show(self, source: str, anchors) -> None:
        anchors = tuple(a for a in anchors if a[1] < a[2])
        if self.stream is not None:
            blocks = self.stream.update(source)
            self._show(blocks, anchors, self.stream.stable)
        else:
            self._show(_renderer.render_blocks(source), anchors, 0)

    def _show(self, blocks, anchors, stable: int) -> None:
        """Blocks `[:stable]` are the objects shown last time (markdown_render.MarkdownStream.stable): with the same
        pins their entries and DOM stay as they are, unvisited, so a frame costs the changed tail, not the answer."""
        if self.replacing:
            self.replacing = False
            self.container.textContent = ""
            self.container.classList.add("md")
        keep = min(stable, len(self.entries)) if anchors == self.anchors else 0
        while keep and self.entries[keep - 1].block is not blocks[keep - 1]:
            keep -= 1  # (never in practice: the stream's stable blocks are the same objects)
        old = {e.block.key: e for e in self.entries[keep:]}
        fresh = []
        for block in blocks[keep:]:
            pins = tuple(a for a in anchors if a[1] < block.end and a[2] > block.start) if anchors else ()
            entry = old.get(block.key)
            if entry is None or entry.block is not block or entry.pins != pins:
                entry = self._build(block, pins, entry)
            fresh.append(entry)
        reused = {id(e) for e in fresh}
        placed = set()
        for entry in self.entries[keep:]:
            if id(entry) in reused:
                placed.add(id(entry))
            else:
                entry.node.remove()
        after = None  # the changed blocks are the container's last children: insert the new ones from the end
        for entry in reversed(fresh):
            if id(entry) not in placed:
                if after is None:
                    self.container.appendChild(entry.node)
                else:
                    self.container.insertBefore(entry.node, after)
            after = entry.node
        del self.entries[keep:]
        self.entries.extend(fresh)
        self.anchors = anchors

    def _build(self, block, pins, old) -> _Shown:
        self.builds += 1
        texts: list = []
        parts: dict = {}
        reuse = old.parts if old is not None and not pins and not old.pins else {}
        holder = dom.element("div")
        self._append(holder, block.node, pins, texts, parts, reuse, ())
        node = holder.firstChild if holder.childNodes.length == 1 and holder.firstChild.nodeType == 1 else holder
        if node is not holder:
            node.remove()
        return _Shown(block, node, texts, parts, pins)

    def _append(self, parent, n, pins, texts, parts, reuse, path) -> None:
        """`path`: the child indices from the block's root; `reuse`: the last build's parts by path."""
        if n.tag is None:
            self._append_text(parent, n, pins, texts)
            return
        cached = reuse.get(path)
        if cached is not None and (cached[0] is n or cached[0] == n):
            parent.appendChild(cached[1])
            texts.extend(cached[2])
            parts[path] = cached
            return
        node = dom.element(n.tag, n.ns)
        for name, value in n.attrs.items():
            node.setAttribute(name, value)
        is_part = n.tag in _PARTS or n.attrs.get("class") == "code-chunk"
        mine = [] if is_part else texts
        inner_pins = () if n.ns else pins  # no <mark> inside MathML
        for i, child in enumerate(n.children):
            self._append(node, child, inner_pins, mine, parts, reuse, (*path, i))
        if is_part:
            parts[path] = (n, node, mine)
            texts.extend(mine)
        if n.tag == "math" and pins:
            covering = [p for p in pins if p[1] < n.end and p[2] > n.start]
            if covering:
                mark = _mark(covering, "pin-math")
                mark.appendChild(node)
                parent.appendChild(mark)
                return
        parent.appendChild(node)

    def _append_text(self, parent, n, pins, texts) -> None:
        if not n.text:
            return
        cuts = []
        if pins and not n.chrome:
            for pin_id, start, end in pins:
                cuts.extend((lo, hi, pin_id) for _, lo, hi in _renderer.marks(n, start, end))
        if not cuts:
            node = dom.text(n.text)
            parent.appendChild(node)
            texts.extend((node, n, 0))
            return
        points = sorted({0, len(n.text), *(c[0] for c in cuts), *(c[1] for c in cuts)})
        for a, b in zip(points, points[1:]):
            node = dom.text(n.text[a:b])
            texts.extend((node, n, a))
            covering = [c for c in cuts if c[0] <= a and c[1] >= b]
            if not covering:
                parent.appendChild(node)
                continue
            ids = {c[2] for c in covering}
            mark = _mark([p for p in pins if p[0] in ids])
            mark.appendChild(node)
            parent.appendChild(mark)

    def source_range(self, selected) -> tuple[int, int] | None:
        """Source `[start, end)` of a DOM Range inside this body, or None when it touches no rendered text."""
        a = dom.text_position(self.container, selected.startContainer, selected.startOffset)
        b = dom.text_position(self.container, selected.endContainer, selected.endOffset)
        if a is None or b is None:
            return None
        index = {}
        for entry in self.entries:
            t = entry.texts
            index.update((t[i].js_id, (t[i + 1], t[i + 2])) for i in range(0, len(t), 3))
        start, end = index.get(a[0].js_id), index.get(b[0].js_id)
        if start is None or end is None:
            return None
        lo, hi = _renderer.selection_range(start[0], start[1] + _points(a), end[0], end[1] + _points(b))
        return (lo, hi) if hi > lo else None


# The parts of a block whose DOM a rebuild of the block takes over when they are unchanged (a growing table's
# finished rows, a list's finished items, formulas, a code block's finished chunks): comparing Node trees in
# Python costs less than building their DOM again through the FFI.
_PARTS = frozenset({"tr", "li", "math", "blockquote"})


def _mark(covering, extra: str = ""):
    """The <mark> of a piece covered by pins `(pin_id, start, end)`: it opens the shortest; `pin-overlap` when more
    than one pin covers it."""
    pin_id = min(covering, key=lambda p: p[2] - p[1])[0]
    cls = "pin-anchor" + (" pin-overlap" if len({p[0] for p in covering}) > 1 else "") + (f" {extra}" if extra else "")
    return dom.el("mark", cls, data_pin_id=pin_id, title="Open this pin")


def _points(position) -> int:
    """A DOM Text offset (UTF-16 code units) as code points, like the Node metas count."""
    node, offset = position
    text = str(node.data)
    if text.isascii():
        return offset
    units = count = 0
    for ch in text:
        if units >= offset:
            break
        units += 2 if ord(ch) > 0xFFFF else 1
        count += 1
    return count
