"""A rendered block (markdown_parts.Node tree) as one HTML string, which the view hands to the browser's parser in
one call: building the same DOM node by node costs a round trip through Pyodide's FFI per node and attribute
(0.3-0.6 ms per node measured in the page), the parser builds it natively.

Safe by construction: tag and attribute names come only from the Node tree, whose constructor allow-lists them
(markdown_parts); every text and attribute value is escaped here (`&`, `<`, `>`, quotes), so model text can only
ever become the content of Text nodes, never markup. `href`s were checked when the tree was built (safe_href).

Pins are drawn as `<mark class=pin-anchor data-pin-id>` around the text they cover (`markdown_parts.marks`),
across formatting; where pins overlap, the text is wrapped once with class `pin-overlap` (darker) and opens the
shorter pin. A formula is atomic: a pin touching it wraps the whole `<math>` in one `<mark class="pin-anchor
pin-math">` (no <mark> inside MathML).

`pieces`: every text run written, in document order, as a flat list of (meta Node, offset in meta, length)
triples. The DOM Text nodes hold exactly these characters in this order (the parser may join adjacent runs into
one node or split a very long one), which is how `position` maps a DOM position back to its meta.
"""

from __future__ import annotations

from html import escape

from markdown_parts import marks

__all__ = ["block_html", "position"]

VOID = frozenset({"br", "hr", "input"})


def block_html(root, pins=(), reuse=None) -> tuple[str, list, dict]:
    """(html, pieces, chunks) of a block's Node tree with pins `(pin_id, start, end)`. `chunks`: the HTML and pieces
    of each `span.code-chunk` by Node id; `reuse`, the chunks of the block's last build, is taken over for the
    chunks that are the same objects (a code block's finished chunks come back as such at every frame, see
    markdown_code.highlight; nothing else does)."""
    out: list[str] = []
    pieces: list = []
    chunks: dict = {}
    _write(root, pins, out, pieces, chunks, reuse or {})
    return "".join(out), pieces, chunks


def _write(n, pins, out, pieces, chunks, reuse) -> None:
    if n.tag is None:
        _write_text(n, pins, out, pieces)
        return
    cached = reuse.get(id(n))
    if cached is not None and cached[0] is n:
        out.append(cached[1])
        pieces.extend(cached[2])
        chunks[id(n)] = cached
        return
    is_chunk = n.attrs.get("class") == "code-chunk"
    own_out, own_pieces = ([], []) if is_chunk else (out, pieces)
    covering = [p for p in pins if p[1] < n.end and p[2] > n.start] if n.tag == "math" and pins else ()
    if covering:
        own_out.append(_mark_open(covering, "pin-math"))
    own_out.append(f"<{n.tag}{''.join(f' {k}={_quoted(v)}' for k, v in n.attrs.items())}>" if n.attrs else f"<{n.tag}>")
    inner_pins = () if n.ns else pins  # no <mark> inside MathML
    for child in n.children:
        _write(child, inner_pins, own_out, own_pieces, chunks, reuse)
    if n.tag not in VOID:
        own_out.append(f"</{n.tag}>")
    if covering:
        own_out.append("</mark>")
    if is_chunk:
        markup = "".join(own_out)
        chunks[id(n)] = (n, markup, own_pieces)
        out.append(markup)
        pieces.extend(own_pieces)


def _write_text(n, pins, out, pieces) -> None:
    text = n.text
    if not text:
        return
    cuts = []
    if pins and not n.chrome:
        for pin_id, start, end in pins:
            cuts.extend((lo, hi, pin_id) for _, lo, hi in marks(n, start, end))
    if not cuts:
        out.append(_escaped(text))
        pieces.extend((n, 0, len(text)))
        return
    points = sorted({0, len(text), *(c[0] for c in cuts), *(c[1] for c in cuts)})
    for a, b in zip(points, points[1:]):
        pieces.extend((n, a, b - a))
        covering = [c for c in cuts if c[0] <= a and c[1] >= b]
        if not covering:
            out.append(_escaped(text[a:b]))
            continue
        ids = {c[2] for c in covering}
        out.append(_mark_open([p for p in pins if p[0] in ids]) + _escaped(text[a:b]) + "</mark>")


def _mark_open(covering, extra: str = "") -> str:
    """The <mark> of a piece covered by pins `(pin_id, start, end)`: it opens the shortest; `pin-overlap` when more
    than one pin covers it."""
    pin_id = min(covering, key=lambda p: p[2] - p[1])[0]
    cls = "pin-anchor" + (" pin-overlap" if len({p[0] for p in covering}) > 1 else "") + (f" {extra}" if extra else "")
    return f'<mark class="{cls}" data-pin-id={_quoted(str(pin_id))} title="Open this pin" tabindex="0">'


def _escaped(text: str) -> str:
    # A raw CR would become LF in the parser's input stream: as a character reference it stays itself.
    return escape(text, quote=False).replace("\r", "&#13;") if "\r" in text else escape(text, quote=False)


def _quoted(value: str) -> str:
    return f'"{escape(value, quote=True)}"'


def position(pieces: list, index: int, prefer_later: bool) -> tuple[object, int] | None:
    """(meta, offset in meta) of character position `index` in the concatenated text of `pieces`. At the boundary
    of two pieces the later one is taken when `prefer_later` (the start of a DOM Text node), else the earlier."""
    at = 0
    found = None
    for i in range(0, len(pieces), 3):
        meta, offset, length = pieces[i], pieces[i + 1], pieces[i + 2]
        if at <= index <= at + length:
            found = (meta, offset + index - at)
            if not prefer_later or index < at + length:
                return found
        at += length
    return found
