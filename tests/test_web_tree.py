"""The browser's conversation tree (web/py/tree.py) and the store parts it relies on, run under CPython."""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "web" / "py"))

import tree  # noqa: E402
from store import Store  # noqa: E402


def thread(tid, parent=None, anchor=None, title=None, streaming=False, **more):
    return {"id": tid, "title": title, "parent_id": parent, "anchor": anchor, "streaming": streaming, **more}


def msg(mid, role, content, **more):
    return {"id": mid, "role": role, "content": content, "status": "complete", **more}


def anchor(message_id, start, end, text="passage"):
    return {"message_id": message_id, "start": start, "end": end, "text": text}


def conversation() -> Store:
    """1 (messages 10, 11, 12, 13) with pins 3 (on 13) and 2 (on 11, later in id but earlier in the text);
    pin 2 has pin 4; pin 4 has pin 5."""
    store = Store()
    p2 = thread(2, 1, anchor(11, 5, 9, "second answer passage"), "Pin two")
    p3 = thread(3, 1, anchor(13, 0, 4), None)
    p4 = thread(4, 2, anchor(21, 0, 3), "Pin four", streaming=True)
    p5 = thread(5, 4, anchor(31, 1, 2), "Pin five")
    store.load_thread({**thread(1, title="Main"), "messages": [msg(10, "user", "q"), msg(11, "assistant", "a1"),
                                                               msg(12, "user", "q2"), msg(13, "assistant", "a2")],
                       "pins": [p3, p2]})
    store.load_thread({**p2, "messages": [msg(20, "user", "about"), msg(21, "assistant", "First line\n\nsecond\nthird\nfourth")],
                       "pins": [p4]})
    store.load_thread({**p4, "messages": [msg(30, "user", "deeper"), msg(31, "assistant", "ok")], "pins": [p5]})
    return store


def test_build_orders_pins_by_anchor_and_nests():
    root = tree.build(conversation(), 1)
    assert [(n.thread_id, n.depth, n.parent_id) for n in tree.walk(root)] == [
        (1, 0, None), (2, 1, 1), (4, 2, 2), (5, 3, 4), (3, 1, 1)]
    labels = {n.thread_id: n.title for n in tree.walk(root)}
    assert labels == {1: "Main", 2: "Pin two", 4: "Pin four", 5: "Pin five", 3: "“passage”"}


def test_streaming_comes_from_the_page_the_snapshot_or_a_merge():
    store = conversation()
    root = tree.build(store, 1)
    assert {n.thread_id for n in tree.walk(root) if n.streaming} == {4}  # the server said so
    store.begin_send(3, "hi")
    root = tree.build(store, 1, busy={1})
    assert {n.thread_id for n in tree.walk(root) if n.streaming} == {1, 3, 4}
    store.finish(3, "complete")
    # a local stream that ended on thread 4 clears the snapshot's flag too
    store.begin_send(4, "more")
    store.finish(4, "complete")
    assert not any(n.streaming for n in tree.walk(tree.build(store, 1)))


def test_signature_changes_with_titles_and_streaming_only():
    store = conversation()
    before = tree.signature(tree.build(store, 1))
    store.begin_send(1, "x")
    store.append_tokens(1, ["a", "b"])
    during = tree.signature(tree.build(store, 1))
    assert during != before
    store.append_tokens(1, ["c"])
    assert tree.signature(tree.build(store, 1)) == during  # tokens change nothing the tree shows
    store.load_thread({**thread(3, 1, anchor(13, 0, 4), "Now titled"), "messages": [], "pins": []},
                      messages=False)
    assert "Now titled" in [n.title for n in tree.walk(tree.build(store, 1))]


def test_path_is_the_breadcrumb():
    store = conversation()
    assert tree.path(store, 5) == [1, 2, 4, 5]
    assert tree.path(store, 1) == [1]
    assert tree.path(store, 3) == [1, 3]  # known from the parent's pin list only


def test_label_fallbacks():
    store = Store()
    store.set_thread_list([thread(7, title="Listed")])
    assert tree.label(store, 7) == "Listed"
    store.load_thread({**thread(8), "messages": [msg(1, "user", "  a   long\nquestion " + "x" * 80)], "pins": []})
    label = tree.label(store, 8)
    assert label.startswith("a long question x") and label.endswith("…") and len(label) <= 61
    assert tree.label(store, 9) == "New thread #9"
    store.load_thread({**thread(10, 8, anchor(1, 0, 1, "")), "messages": [], "pins": []})
    assert tree.label(store, 10) == "Pin #10"


def test_preview_is_the_first_lines_of_the_first_answer():
    store = conversation()
    assert tree.preview(store, 2) == "First line\nsecond\nthird"
    assert tree.preview(store, 3) is None  # not loaded
    store.load_thread({**thread(3, 1, anchor(13, 0, 4)), "messages": [msg(40, "user", "q")], "pins": []})
    assert tree.preview(store, 3) == ""
    assert len(tree.preview(store, 2, chars=8)) == 9


def test_a_cycle_in_broken_data_does_not_hang():
    store = Store()
    store.load_thread({**thread(1, 2), "messages": [], "pins": [thread(2, 1, anchor(1, 0, 1))]})
    store.load_thread({**thread(2, 1, anchor(1, 0, 1)), "messages": [], "pins": [thread(1, 2)]})
    assert [n.thread_id for n in tree.walk(tree.build(store, 1))] == [1, 2]
    assert set(tree.path(store, 1)) == {1, 2}


def test_reloading_keeps_message_keys_and_merge_fields():
    store = conversation()
    keys = [m.key for m in store.get(1).messages]
    detail = {**thread(1, title="Main"), "pins": store.get(1).pins,
              "messages": [msg(10, "user", "q"), msg(11, "assistant", "a1"), msg(12, "user", "q2"),
                           msg(13, "assistant", "a2"),
                           msg(14, "assistant", "merged", kind="merge", merged_ids=[1, 2])]}
    store.load_thread(detail)
    messages = store.get(1).messages
    assert [m.key for m in messages[:4]] == keys and messages[4].key not in keys
    assert messages[4].kind == "merge" and messages[4].merged_ids == [1, 2]
    assert messages[0].kind == "chat"


def test_info_refresh_keeps_the_messages_shown():
    store = conversation()
    shown = store.get(2).messages
    store.load_thread({**thread(2, 1, anchor(11, 5, 9), "Renamed", suggestions=["Why?"]), "messages": [],
                       "pins": store.get(2).pins}, messages=False)
    assert store.get(2).messages is shown and store.get(2).title == "Renamed"
    assert store.get(2).info["suggestions"] == ["Why?"]


def test_a_merge_streams_under_its_own_key():
    store = Store()
    calls = []
    store.subscribe_any(lambda key, kind: calls.append((key, kind)))
    answer = store.begin_merge("merge:1", [1, 2])
    assert answer.kind == "merge" and answer.merged_ids == [1, 2] and store.get("merge:1").streaming
    store.on_start("merge:1", None, 99)
    store.append_tokens("merge:1", ["Merged ", "text"])
    store.finish("merge:1", "interrupted", message_id=99)
    state = store.get("merge:1")
    assert state.messages == [answer] and answer.content == "Merged text" and answer.status == "interrupted"
    assert answer.id == 99
    assert ("merge:1", "tokens") not in calls and ("merge:1", "end") in calls
    store.begin_merge("merge:1")  # the next merge replaces the shown one
    assert len(store.get("merge:1").messages) == 1 and store.get("merge:1").messages[0] is not answer


def test_remove_thread_forgets_its_pins_and_its_place_in_the_parent():
    store = conversation()
    store.remove_thread(2)
    assert store.get(2) is None and store.get(4) is None and store.get(5) is None
    assert [p["id"] for p in store.get(1).pins] == [3]
    assert [n.thread_id for n in tree.walk(tree.build(store, 1))] == [1, 3]


def test_a_pins_passage_reads_as_rendered_once_the_renderer_is_in():
    """A selection across `**bold**` anchors source characters with the `**` in them: the pin's label and quote show
    the words the reader selected, from the rendered parent answer; before the renderer is in (or without the
    parent's answer, or when the anchor no longer matches it), the source characters."""
    import markdown_render

    answer = "Intro with **bold phrase here** and more."
    start, end = answer.index("with"), answer.index(" here")
    store = Store()
    store.load_thread({**thread(1, title="Main"), "messages": [msg(10, "user", "q"), msg(11, "assistant", answer)],
                       "pins": []})
    store.load_thread({**thread(2, 1, anchor(11, start, end, answer[start:end])), "messages": [], "pins": []})
    store.load_thread({**thread(3, 99, anchor(7, 0, 8, "**gone**")), "messages": [], "pins": []})
    assert tree.label(store, 2) == "“with **bold phrase”"
    tree.show_passages_rendered(markdown_render.passage_text)
    try:
        assert tree.label(store, 2) == "“with bold phrase”"
        assert tree.passage(store, store.get(2).info) == "with bold phrase"
        assert tree.label(store, 3) == "“**gone**”"  # its parent's answer is not here
    finally:
        tree.show_passages_rendered(None)
