"""The OpenAI-compatible HTTP server: schemas, ASGI app, routes, metrics and launcher."""
