"""The aiohttp web layer: app factory, routes, handlers, middlewares and the Python client."""
