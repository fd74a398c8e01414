"""Helpers for the SDK tests: waiting on a condition with a deadline."""

import asyncio
import time

import pytest


def poll_until(condition, within, what, every=0.1):
    """Call ``condition`` until it returns a truthy value or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        time.sleep(every)


async def apoll_until(condition, within, what, every=0.1):
    """The async form of :func:`poll_until`; ``condition`` is a coroutine function."""
    deadline = time.monotonic() + within
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(every)
