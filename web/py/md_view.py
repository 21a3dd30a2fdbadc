"""Rendered Markdown of one message in the DOM (the blocks of markdown_render -> elements), with pin anchors.

* Streaming: `update(source)` at each frame. markdown_render.MarkdownStream returns the same Block object for a
  block whose text did not change: its DOM is kept (`old is new`), only changed blocks are rebuilt, gone ones
  removed; the leading blocks it reports `stable` are not even visited, so a frame costs the tail, not the answer.
* A block is built in one call: markdown_html writes its Node tree (with the pins' marks) as escaped,
  allow-listed HTML and `dom.from_html` parses it natively (node by node through the FFI cost ~10x more). Inside
  a rebuilt code block, the finished chunks come back as the same Node objects and keep their HTML string, so a
  frame writes the code block's last chunk, not all of it.
* Groups: the blocks sit in `<div class=md-group>`s of about GROUP_BLOCKS each, not directly in the body. Chrome
  re-runs a block container's layout over all its children when its last child grows (~5 ms per frame for the 1,200
  blocks of an 8,000-token answer, against ~0.5 ms in groups of 20): grouped, a frame lays out the body's few groups
  and the last group's blocks. A plain block `div` lets margins collapse through it, so nothing moves on screen.
* Finished: `show(source, anchors)` (one-off with `render_blocks` when nothing was streamed here). Each pin anchor
  `(pin_id, start, end)` (source offsets) is drawn as `<mark class=pin-anchor data-pin-id>` around the text it
  covers, across formatting (markdown_html).
* Pins: `source_range(range)` maps a DOM Range inside the body to source `[start, end)`: the block holding each
  end, the characters of the block's Text nodes before it, and the block's text pieces (markdown_html: each run
  of text written with its Node meta) give the meta and the offset in it. Nothing per Text node is kept while
  streaming: the mapping is made when a selection asks for it.

* Loading: the renderer (markdown-it and its plugins, ~0.5-0.7 s to import in Pyodide; markdown_parts' `html` and
  `urllib.parse` alone ~0.2 s) is imported by `load()` after the page is usable, not before (boot.js unpacks its
  wheels once the composer shows); until then message_view shows answers as plain text and `loaded()` is False.
"""

from __future__ import annotations

import dom

__all__ = ["MarkdownBody", "load", "loaded"]

_renderer = None  # the markdown_render module, once `load()` imported it
_html = None  # markdown_html, likewise


def load() -> None:
    """Import the renderer (its wheels must be unpacked by then)."""
    global _renderer, _html
    import markdown_html
    import markdown_render
    _renderer, _html = markdown_render, markdown_html


def loaded() -> bool:
    return _renderer is not None


GROUP_BLOCKS = 16


class _Shown:
    __slots__ = ("block", "node", "pieces", "chunks", "pins", "group")

    def __init__(self, block, node, pieces, chunks, pins):
        self.block, self.node, self.pieces, self.chunks, self.pins = block, node, pieces, chunks, pins
        self.group: _Group | None = None  # where its node is


class _Group:
    __slots__ = ("node", "size")

    def __init__(self, node):
        self.node, self.size = node, 0


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
        self.entries: list[_Shown] = []  # in block order; their nodes are the groups' children, in order
        self.groups: list[_Group] = []  # the container's children, in order
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
        for entry in self.entries[keep:]:
            if id(entry) not in reused:
                entry.node.remove()
                entry.group.size -= 1
        prev = self.entries[keep - 1] if keep else None
        for index, entry in enumerate(fresh):
            if entry.group is None:
                self._place(entry, prev, fresh[index + 1:])
            prev = entry
        while self.groups and not self.groups[-1].size:
            self.groups.pop().node.remove()
        del self.entries[keep:]
        self.entries.extend(fresh)
        self.anchors = anchors

    def _place(self, entry, prev, later) -> None:
        """Put a new block's node right after `prev`'s (or first): in prev's group, or at the start of the next group
        (a new one at the end) when that one is full and nothing placed after prev is in it. `later`: the entries
        after it, of which those with a group are already in place."""
        group = prev.group if prev is not None else self.groups[0] if self.groups else None
        ref = _first_in(group, later)
        if prev is not None and ref is None and group.size >= GROUP_BLOCKS:
            at = self.groups.index(group) + 1
            group = self.groups[at] if at < len(self.groups) else None
            ref = _first_in(group, later)
        if group is None:
            group = _Group(dom.from_html('<div class="md-group"></div>'))
            self.container.appendChild(group.node)
            self.groups.append(group)
        group.node.insertBefore(entry.node, ref.node if ref is not None else None)
        group.size += 1
        entry.group = group

    def _build(self, block, pins, old) -> _Shown:
        self.builds += 1
        reuse = old.chunks if old is not None and not pins and not old.pins else None
        markup, pieces, chunks = _html.block_html(block.node, pins, reuse)
        return _Shown(block, dom.from_html(markup), pieces, chunks, pins)

    def source_range(self, selected) -> tuple[int, int] | None:
        """Source `[start, end)` of a DOM Range inside this body, or None when it touches no rendered text."""
        a = dom.text_position(self.container, selected.startContainer, selected.startOffset)
        b = dom.text_position(self.container, selected.endContainer, selected.endOffset)
        start, end = self._meta_at(a, end=False), self._meta_at(b, end=True)
        if start is None or end is None:
            return None
        lo, hi = _renderer.selection_range(*start, *end)
        return (lo, hi) if hi > lo else None

    def _meta_at(self, position, end: bool):
        """(text meta, offset in it) of a DOM (Text node, offset) in one of the blocks, or None."""
        if position is None:
            return None
        group_node = dom.child_of(self.container, position[0])
        block_node = dom.child_of(group_node, position[0]) if group_node is not None else None
        entry = next((e for e in self.entries if block_node is not None and e.node.js_id == block_node.js_id), None)
        if entry is None:
            return None
        before = dom.text_before(entry.node, position[0])
        if before is None:
            return None
        offset, length = _points(position), len(str(position[0].data))
        prefer_later = offset == 0 or (offset < length and not end)
        return _html.position(entry.pieces, before + offset, prefer_later)


def _first_in(group, entries):
    """The first of `entries` placed in `group` (the node to insert before), or None (append; also for no group)."""
    return next((e for e in entries if group is not None and e.group is group), None)


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
