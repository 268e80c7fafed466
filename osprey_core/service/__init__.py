"""``osprey serve``: the HTTP API, the web console and the OpenAI-compatible chat endpoint.

Everything here drives the same :class:`osprey_core.Osprey` API as the command line; the
web framework (FastAPI on uvicorn, the ``serve`` extra) is imported only by this package.
"""
