"""pinchat server: LiteLLM Router -> generation registry -> SSE over aiohttp -> SQLite."""

import os

# LiteLLM downloads a model price map at import unless told to use its bundled copy; we run offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
