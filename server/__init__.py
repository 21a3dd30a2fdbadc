"""pinchat server: LiteLLM Router -> generation registry -> SSE over aiohttp -> SQLite."""
