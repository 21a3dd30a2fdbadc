"""`litellm-lean` (bench-only): the app's LiteLLM settings plus the extra process settings bench/README.md
recommends, so their effect on LiteLLM's own per-chunk cost is measured in isolation.

BENCH_LITELLM_SET="name=value,..." additionally sets litellm module attributes (for experiments, e.g.
`disable_aiohttp_transport=1`); values are parsed as Python literals when possible.
"""

from __future__ import annotations

import ast
import gc
import os


def apply_lean() -> None:
    import litellm

    for item in filter(None, os.environ.get("BENCH_LITELLM_SET", "").split(",")):
        name, _, value = item.partition("=")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        setattr(litellm, name.strip(), parsed)
    gc.collect()
    gc.freeze()
    gc.set_threshold(int(os.environ.get("BENCH_GC_GEN0", "10000")), *gc.get_threshold()[1:])
