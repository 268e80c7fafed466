"""A stand-in for ``asyncio.sleep`` in retry tests: returns at once, keeps the back-off."""

from __future__ import annotations


class Sleeps:
    """A no-op ``sleep`` that remembers the back-off it was asked for."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
