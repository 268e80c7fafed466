"""Blocking work off the event loop, for plugin modules that load on every ``--help``.

Importing asyncio costs about 25 ms, a tenth of ``osprey --help``; the plugins that only
need ``to_thread`` call :func:`in_thread`, which imports it when a step actually runs.
"""

from __future__ import annotations

from collections.abc import Callable


async def in_thread[T](function: Callable[..., T], *args: object, timeout: float | None = None,
                       **kwargs: object) -> T:
    """``function(*args, **kwargs)`` in a worker thread; ``TimeoutError`` after ``timeout``."""
    import asyncio

    work = asyncio.to_thread(function, *args, **kwargs)
    return await (asyncio.wait_for(work, timeout) if timeout is not None else work)
