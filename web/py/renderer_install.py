"""The Markdown renderer is put in after the page is usable, not before: importing markdown-it and its plugins
costs ~0.5-0.7 s in Pyodide (md_view.py). Until it is in, answers show as plain text; then they become Markdown at
the next frame and its first-use costs are paid in small steps while the user reads. The root element's
`data-renderer` says how far it got: `ready`, then `warm` (tests and benchmarks wait for them)."""

from __future__ import annotations

import asyncio
import gc

import dom
import md_view
import message_view
import tree
from dom import Tasks

__all__ = ["install"]

_background = Tasks()  # the warm-up: kept alive, and logged if it fails


async def install(rerender) -> None:
    """Import the renderer, show the answers shown so far as Markdown (`rerender()`), then warm it up."""
    await asyncio.sleep(0)  # the first paint of the usable page goes first
    md_view.load()
    message_view.render_as_markdown()
    import markdown_render  # loaded by md_view.load()

    tree.show_passages_rendered(markdown_render.passage_text)  # pins' titles and quotes as the answer reads
    rerender()
    dom.document.documentElement.dataset.renderer = "ready"
    _background.spawn(warm_up())


async def warm_up() -> None:
    """Pay the renderer's first-use costs (lexers, latex2mathml: up to ~90 ms each) in small steps while the user
    reads the page, not inside the frame of a first answer's first token. Then take everything loaded so far out
    of the cycle collector's walks: a full collection would otherwise visit all of it at every pass."""
    import markdown_render

    for step in markdown_render.warm_up_steps():
        await asyncio.sleep(0.02)  # one step per turn of the browser's loop: input and frames go first
        step()
    gc.freeze()
    dom.document.documentElement.dataset.renderer = "warm"
