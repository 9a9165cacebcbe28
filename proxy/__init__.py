"""The proxy: an OpenAI-compatible Starlette app that logs every interaction and owns storage."""
