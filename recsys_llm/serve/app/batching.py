"""Micro-batching: concurrent requests that need the same model share one forward pass.

:class:`MicroBatcher` collects what requests submit for a few milliseconds (or until ``max_batch``), then runs
the model once on all of it in a worker thread, so the event loop keeps answering other requests while an
item batch is encoded.

Example:
    >>> b = MicroBatcher(lambda texts: enc.encode_items(texts, 64), window_ms=3)   # doctest: +SKIP
    >>> vectors = await b.submit(["Orbit (2026) | a space drama"])                 # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

logger = logging.getLogger(__name__)


class MicroBatcher:
    """Batches lists of texts into one ``fn(texts) -> (n, d)`` call.

    Args:
        fn: the model call (thread-safe for one caller at a time; it runs in the batcher's own thread).
        window_ms: how long the first request of a batch waits for others.
        max_batch: texts per call at most.
    """

    def __init__(self, fn: Callable[[list[str]], np.ndarray], window_ms: float = 3.0, max_batch: int = 64,
                 name: str = "batch") -> None:
        self.fn, self.window, self.max_batch, self.name = fn, window_ms / 1000.0, max_batch, name
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future]] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.sizes: list[int] = []
        self.model_s = 0.0  # seconds of the last model call

    async def submit(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), d)`` vectors, computed with whatever else arrives within the window."""
        if self.queue is None or self.task is None or self.task.done():
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._run())
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put((list(texts), fut))
        return await fut

    async def _run(self) -> None:
        assert self.queue is not None
        while True:
            batch = [await self.queue.get()]
            if self.window > 0:
                await asyncio.sleep(self.window)  # one timer, not a wait per arrival: few loop round trips
            n = len(batch[0][0])
            while n < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
                n += len(batch[-1][0])
            await self._call(batch)

    async def _call(self, batch: list[tuple[list[str], asyncio.Future]]) -> None:
        texts = [t for ts, _ in batch for t in ts]
        t0 = time.perf_counter()
        try:
            out = await asyncio.get_running_loop().run_in_executor(self.executor, self._timed, texts)
        except Exception as e:  # every waiting request gets the error, the batcher keeps running
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        self.batches += 1
        self.sizes.append(len(texts))
        logger.debug("%s: %d texts, %.1f ms in the model, %.1f ms with the hand-offs", self.name, len(texts),
                      self.model_s * 1000, (time.perf_counter() - t0) * 1000)
        start = 0
        for ts, fut in batch:
            if not fut.done():
                fut.set_result(out[start: start + len(ts)])
            start += len(ts)

    def _timed(self, texts: list[str]) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.fn(texts)
        self.model_s = time.perf_counter() - t0
        return out

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
