"""Rendered Markdown of one message in the DOM (the blocks of markdown_render -> elements), with pin anchors.

* Streaming: `update(source)` at each frame. markdown_render.MarkdownStream returns the same Block object for a
  block whose text did not change: its DOM is kept (`old is new`), only changed blocks are rebuilt, gone ones
  removed. Inside a rebuilt code block, finished `span.code-chunk` Nodes come back identical and keep their DOM.
* Finished: `show(source, anchors)` (one-off with `render_blocks` when nothing was streamed here). Each pin anchor
  `(pin_id, start, end)` (source offsets) is drawn as `<mark class=pin-anchor data-pin-id>` around the DOM text it
  covers (`markdown_parts.marks`), across formatting; where pins overlap, the text is wrapped once with class
  `pin-overlap` (darker) and opens the shorter pin.
* Pins: `source_range(range)` maps a DOM Range inside the body to source `[start, end)` (each DOM Text node made
  here is remembered with its Node meta and the offset of its first character in that meta).

Model text only ever becomes Text nodes; elements and attributes come from the Node tree (allow-listed there).
"""

from __future__ import annotations

import dom
from markdown_parts import marks, selection_range
from markdown_render import MarkdownStream, render_blocks

__all__ = ["MarkdownBody"]


class _Shown:
    __slots__ = ("block", "node", "texts", "chunks", "pins")

    def __init__(self, block, node, texts, chunks, pins):
        self.block, self.node, self.texts, self.chunks, self.pins = block, node, texts, chunks, pins


class MarkdownBody:
    """The `.md` body of one assistant message."""

    def __init__(self, container) -> None:
        self.container = container
        container.classList.add("md")
        self.stream: MarkdownStream | None = None
        self.shown: dict = {}  # block key -> _Shown
        self.builds = 0  # blocks built so far (tests and benchmarks read it)

    def update(self, source: str) -> None:
        if self.stream is None:
            self.stream = MarkdownStream()
        self._show(self.stream.update(source), ())

    def show(self, source: str, anchors) -> None:
        blocks = self.stream.update(source) if self.stream is not None else render_blocks(source)
        self._show(blocks, tuple(a for a in anchors if a[1] < a[2]))

    def _show(self, blocks, anchors) -> None:
        fresh: dict = {}
        for block in blocks:
            pins = tuple(a for a in anchors if a[1] < block.end and a[2] > block.start)
            old = self.shown.get(block.key)
            if old is not None and old.block is block and old.pins == pins:
                fresh[block.key] = old
            else:
                fresh[block.key] = self._build(block, pins, old)
        for key, old in self.shown.items():
            if fresh.get(key) is not old:
                old.node.remove()
        after = None
        for block in reversed(blocks):
            entry = fresh[block.key]
            if self.shown.get(block.key) is not entry:
                if after is None:
                    self.container.appendChild(entry.node)
                else:
                    self.container.insertBefore(entry.node, after)
            after = entry.node
        self.shown = fresh

    def _build(self, block, pins, old) -> _Shown:
        self.builds += 1
        texts: list = []
        chunks: dict = {}
        reuse = old.chunks if old is not None and not pins and not old.pins else {}
        holder = dom.element("div")
        self._append(holder, block.node, pins, texts, chunks, reuse)
        node = holder.firstChild if holder.childNodes.length == 1 and holder.firstChild.nodeType == 1 else holder
        if node is not holder:
            node.remove()
        return _Shown(block, node, texts, chunks, pins)

    def _append(self, parent, n, pins, texts, chunks, reuse) -> None:
        if n.tag is None:
            self._append_text(parent, n, pins, texts)
            return
        cached = reuse.get(id(n))
        if cached is not None and cached[0] is n:
            parent.appendChild(cached[1])
            texts.extend(cached[2])
            chunks[id(n)] = cached
            return
        node = dom.element(n.tag, n.ns)
        for name, value in n.attrs.items():
            node.setAttribute(name, value)
        is_chunk = n.attrs.get("class") == "code-chunk"
        mine = [] if is_chunk else texts
        inner_pins = () if n.ns else pins  # no <mark> inside MathML
        for child in n.children:
            self._append(node, child, inner_pins, mine, chunks, reuse)
        if is_chunk:
            chunks[id(n)] = (n, node, mine)
            texts.extend(mine)
        parent.appendChild(node)

    def _append_text(self, parent, n, pins, texts) -> None:
        if not n.text:
            return
        cuts = []
        if pins and not n.chrome:
            for pin_id, start, end in pins:
                cuts.extend((lo, hi, pin_id) for _, lo, hi in marks(n, start, end))
        if not cuts:
            node = dom.text(n.text)
            parent.appendChild(node)
            texts.append((node, n, 0))
            return
        points = sorted({0, len(n.text), *(c[0] for c in cuts), *(c[1] for c in cuts)})
        for a, b in zip(points, points[1:]):
            node = dom.text(n.text[a:b])
            texts.append((node, n, a))
            covering = [c for c in cuts if c[0] <= a and c[1] >= b]
            if not covering:
                parent.appendChild(node)
                continue
            pin_id = min(covering, key=lambda c: c[1] - c[0])[2]
            cls = "pin-anchor pin-overlap" if len({c[2] for c in covering}) > 1 else "pin-anchor"
            mark = dom.el("mark", cls, data_pin_id=pin_id, title="Open this pin")
            mark.appendChild(node)
            parent.appendChild(mark)

    def source_range(self, selected) -> tuple[int, int] | None:
        """Source `[start, end)` of a DOM Range inside this body, or None when it touches no rendered text."""
        a = dom.text_position(self.container, selected.startContainer, selected.startOffset)
        b = dom.text_position(self.container, selected.endContainer, selected.endOffset)
        if a is None or b is None:
            return None
        index = {node.js_id: (meta, base) for entry in self.shown.values() for node, meta, base in entry.texts}
        start, end = index.get(a[0].js_id), index.get(b[0].js_id)
        if start is None or end is None:
            return None
        lo, hi = selection_range(start[0], start[1] + _points(a), end[0], end[1] + _points(b))
        return (lo, hi) if hi > lo else None



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
