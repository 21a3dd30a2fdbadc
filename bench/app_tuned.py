"""`app-tuned` (bench-only): our unchanged server, started with the process-level changes that bench/README.md
recommends, applied from outside so their effect is measured on the real code before anyone edits server/.

Applied at start-up, after the app (and with it LiteLLM and the Router) is built:
- `gc.collect(); gc.freeze()`: move the ~1M objects LiteLLM's import leaves behind into the permanent generation,
  so a full (generation-2) collection no longer walks them: that walk is a 100-600 ms stop of the event loop.
- `gc.set_threshold(GEN0)` (env BENCH_GC_GEN0, default 10000; 0 keeps Python's 700): fewer young collections for
  the many short-lived pydantic objects made per chunk.

Run exactly like `python -m server`: `python -m bench.app_tuned --port ... --models ...`.
"""

from __future__ import annotations

import gc
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> None:
    import server.app
    from server.__main__ import main as server_main

    create_app = server.app.create_app

    def create_app_then_freeze(*args, **kwargs):
        app = create_app(*args, **kwargs)
        gc.collect()
        gc.freeze()
        gen0 = int(os.environ.get("BENCH_GC_GEN0", "10000"))
        if gen0:
            gc.set_threshold(gen0, *gc.get_threshold()[1:])
        return app

    server.app.create_app = create_app_then_freeze
    server_main()


if __name__ == "__main__":
    main()
