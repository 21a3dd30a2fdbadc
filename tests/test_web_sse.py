"""The browser's SSE parser (web/py/sse.py), run under CPython: spec cases and every way of cutting the bytes."""

from __future__ import annotations

import itertools
import json
import pathlib
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "web" / "py"))

from sse import Event, SSEParser  # noqa: E402


def parse(chunks, terminal=None):
    parser = SSEParser(terminal)
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events, parser.close()


def parse_whole(data: bytes, terminal=None):
    return parse([data], terminal)


def cuts(data: bytes, n: int):
    """Every way to cut `data` into n+1 chunks (empty chunks included)."""
    for points in itertools.combinations_with_replacement(range(len(data) + 1), n):
        bounds = (0, *points, len(data))
        yield [data[a:b] for a, b in itertools.pairwise(bounds)]


# ---- the spec, on whole input -----------------------------------------------------------------------------------


def test_basic_frames_and_ids():
    events, clean = parse_whole(b'id: 1\ndata: {"type":"token","text":"a"}\n\nid: 2\ndata: b\n\n')
    assert events == [Event("message", '{"type":"token","text":"a"}', "1"), Event("message", "b", "2")]
    assert clean


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_line_ends(eol):
    data = b"data: one" + eol + b"data: two" + eol + eol + b"data: three" + eol + eol
    events, clean = parse_whole(data)
    assert [e.data for e in events] == ["one\ntwo", "three"]
    assert clean


def test_mixed_line_ends():
    events, _ = parse_whole(b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r")
    assert [e.data for e in events] == ["a\nb\nc", "d"]


def test_comments_are_ignored():
    events, clean = parse_whole(b": ping\n\n:another\ndata: x\n: inside\n\n: ping\n\n")
    assert [e.data for e in events] == ["x"]
    assert clean


def test_exactly_one_leading_space_stripped():
    events, _ = parse_whole(b"data:no space\n\ndata: one\n\ndata:  two\n\ndata:\n\n")
    assert [e.data for e in events] == ["no space", "one", " two", ""]


def test_field_without_colon_and_unknown_fields():
    # `data` alone is a data line with an empty value; unknown fields are ignored.
    events, _ = parse_whole(b"data\ndata\n\nfoo: bar\nretryx: 1\ndata: y\n\n")
    assert [e.data for e in events] == ["\n", "y"]


def test_event_type_and_reset():
    events, _ = parse_whole(b"event: custom\ndata: a\n\ndata: b\n\nevent: lonely\n\ndata: c\n\n")
    assert [(e.type, e.data) for e in events] == [("custom", "a"), ("message", "b"), ("message", "c")]


def test_id_persists_and_nul_id_ignored():
    events, _ = parse_whole(b"id: 7\ndata: a\n\ndata: b\n\nid: 8\x009\ndata: c\n\nid\ndata: d\n\n")
    assert [e.id for e in events] == ["7", "7", "7", ""]


def test_event_without_data_is_not_dispatched_but_sets_id():
    parser = SSEParser()
    assert parser.feed(b"id: 42\n\n") == []
    assert parser.last_event_id == "42"
    assert parser.feed(b"data: z\n\n") == [Event("message", "z", "42")]


def test_retry():
    parser = SSEParser()
    parser.feed(b"retry: 1500\n\nretry: 12x\n\n")
    assert parser.retry == 1500


def test_bom_dropped_only_at_start():
    events, _ = parse_whole("\ufeffdata: a\n\ndata: \ufeffb\n\n".encode())
    assert [e.data for e in events] == ["a", "\ufeffb"]


def test_no_splitlines_on_unicode_separators():
    text = "a\u2028b\x1cc\x85d\u2029e\x0bf\x0cg"
    events, _ = parse_whole(f"data: {text}\n\n".encode())
    assert [e.data for e in events] == [text]


def test_invalid_utf8_becomes_replacement_char():
    events, _ = parse_whole(b"data: a\xffb\n\n")
    assert [e.data for e in events] == ["a\ufffdb"]


# ---- truncation ---------------------------------------------------------------------------------------------------


def is_terminal(event: Event) -> bool:
    return json.loads(event.data)["type"] in ("done", "error", "interrupted")


def test_truncated_mid_event():
    events, clean = parse_whole(b"data: a\n\ndata: b\n")
    assert [e.data for e in events] == ["a"]
    assert not clean


def test_truncated_mid_line():
    events, clean = parse_whole(b"data: a\n\ndata: b")
    assert [e.data for e in events] == ["a"]
    assert not clean


def test_truncated_mid_character():
    events, clean = parse_whole("data: a\n\n".encode() + "é".encode()[:1])
    assert len(events) == 1
    assert not clean


def test_clean_end_without_terminal_predicate():
    _, clean = parse_whole(b"data: a\n\n: ping\n")
    assert clean


def test_terminal_predicate():
    tokens = b'data: {"type":"token","text":"x"}\n\n'
    done = b'data: {"type":"done"}\n\n'
    assert parse_whole(tokens, is_terminal)[1] is False
    assert parse_whole(tokens + done, is_terminal)[1] is True
    assert parse_whole(tokens + b'data: {"type":"interrupted"}\n\n', is_terminal)[1] is True
    parser = SSEParser(is_terminal)
    parser.feed(tokens)
    parser.close()
    assert parser.truncated


def test_feed_after_close_raises():
    parser = SSEParser()
    parser.close()
    with pytest.raises(ValueError):
        parser.feed(b"data: x\n\n")


# ---- every split point ---------------------------------------------------------------------------------------------

# A stream with everything that can be cut badly: CRLF, bare CR, multi-byte UTF-8 of 2, 3 and 4 bytes, a ZWJ
# sequence, a comment, multi-line data, an id, a leading-space edge and a CR that is followed by a blank line.
TRICKY = (
    b"\xef\xbb\xbf: hello\r\n"
    + "id: 1\r\ndata: café 中文 🙂\r\ndata:  two\r\n\r\n".encode()
    + "event: x\rdata: 👩‍💻 𝄞 ß\r\r".encode()
    + b": ping\n\n"
    + 'id: 3\ndata: {"type":"token","text":"\\u00e9"}\n\n'.encode()
)
TRICKY_EVENTS = [
    Event("message", "café 中文 🙂\n two", "1"),
    Event("x", "👩‍💻 𝄞 ß", "1"),
    Event("message", '{"type":"token","text":"\\u00e9"}', "3"),
]


def test_tricky_whole():
    assert parse_whole(TRICKY) == (TRICKY_EVENTS, True)


def test_every_single_split_point():
    for chunks in cuts(TRICKY, 1):
        assert parse(chunks) == (TRICKY_EVENTS, True), chunks


def test_every_pair_of_split_points():
    for chunks in cuts(TRICKY, 2):
        assert parse(chunks) == (TRICKY_EVENTS, True), chunks


def test_byte_by_byte():
    assert parse([TRICKY[i : i + 1] for i in range(len(TRICKY))]) == (TRICKY_EVENTS, True)


def test_crlf_split_counts_once():
    # "data: a\r" | "\ndata: b\r\n\r\n": if the LF were a second line end, the event would be dispatched early.
    for chunks in cuts(b"data: a\r\ndata: b\r\n\r\n", 2):
        assert parse(chunks) == ([Event("message", "a\nb")], True), chunks


def test_every_three_cuts_of_small_multibyte_stream():
    data = "data: é中🙂\r\n\r\n".encode()
    for chunks in cuts(data, 3):
        assert parse(chunks) == ([Event("message", "é中🙂")], True), chunks


def test_events_come_out_as_soon_as_complete():
    parser = SSEParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"\n") == [Event("message", "a")]
    # CR then LF in the next chunk: the event is dispatched at the second CR, the LF is swallowed.
    assert parser.feed(b"data: b\r\r") == [Event("message", "b")]
    assert parser.feed(b"\ndata: c\n\n") == [Event("message", "c")]


# ---- random chunkings (hypothesis) ----------------------------------------------------------------------------------

frame_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
)
eols = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def streams(draw):
    """A random stream and the events it must give."""
    out, expected, last_id = [], [], None
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            out.append(":" + draw(frame_text) + draw(eols))
        if draw(st.booleans()):
            last_id = draw(frame_text.filter(lambda s: "\x00" not in s))
            out.append("id: " + last_id + draw(eols))
        lines = draw(st.lists(frame_text, min_size=1, max_size=3))
        for line in lines:
            out.append("data: " + line + draw(eols))
        # After a bare CR, a LF would join it into one CRLF line end instead of making the blank line.
        out.append(draw(st.sampled_from(["\r", "\r\n"])) if out[-1].endswith("\r") else draw(eols))
        expected.append(Event("message", "\n".join(lines), last_id))
    return "".join(out).encode(), expected


@settings(max_examples=300, deadline=None)
@given(streams(), st.data())
def test_random_chunking(stream, data):
    raw, expected = stream
    points = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    bounds = [0, *points, len(raw)]
    chunks = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    events, clean = parse(chunks)
    assert events == expected
    assert clean
