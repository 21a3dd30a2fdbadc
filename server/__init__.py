"""pinchat server: LiteLLM Router -> generation registry -> SSE over aiohttp -> SQLite."""

import os

# LiteLLM downloads a model price map when it is imported unless told to use its bundled copy, and we run offline.
# The package's __init__ runs before any server module imports LiteLLM, whoever imports us (the CLI, the tests, the
# benchmarks, an embedding app); an explicit setting in the environment still wins.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
