"""Micro-batching: concurrent requests gathered into one forward pass.

A decode request costs a few small matrix products; fifty clients each sending ten a second
would spend most of the machine on per-call overhead (a thread hop, PyTorch's dispatch of every
layer) if each ran alone. `MicroBatcher.submit(item)` puts the item on an asyncio queue and waits;
one task takes the first waiting item, gathers whatever else arrives within `max_wait` seconds
(at most `max_batch` items), runs `compute(items)` once on a worker thread, and hands each caller
its own result. Under load, requests pile up while a batch runs, so batches grow by themselves;
an idle server answers a lone request after `max_wait`. `max_batch = 1` turns it off: every
request runs `compute([item])` on the worker thread by itself (what the load benchmark compares).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class BatchStats:
    """Requests answered and forward passes run since start: their ratio is the mean batch size."""

    requests: int = 0
    batches: int = 0
    largest: int = 0


class MicroBatcher(Generic[Item, Result]):
    """Runs compute(items) -> results (one per item, in order) for batches of concurrent submits."""

    def __init__(
        self,
        compute: Callable[[Sequence[Item]], Sequence[Result]],
        executor: Executor,
        *,
        max_batch: int = 64,
        max_wait: float = 0.001,
    ) -> None:
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait >= 0, got {max_batch}, {max_wait}")
        self.compute, self.executor = compute, executor
        self.max_batch, self.max_wait = max_batch, max_wait
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the gathering task on the running loop (a no-op when batching is off)."""
        if self.max_batch > 1 and self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._gather_and_run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def submit(self, item: Item) -> Result:
        """compute([... item ...]) for this item, batched with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        if self._queue is None:  # off (or not started): one forward pass per request
            self._count(1)
            (result,) = await loop.run_in_executor(self.executor, self.compute, [item])
            return result
        future: asyncio.Future[Result] = loop.create_future()
        await self._queue.put((item, future))
        return await future

    def _count(self, size: int) -> None:
        self.stats.requests += size
        self.stats.batches += 1
        self.stats.largest = max(self.stats.largest, size)

    async def _gather_and_run(self) -> None:
        assert self._queue is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            waiting = [(item, future) for item, future in batch if not future.cancelled()]  # clients gone
            if not waiting:
                continue
            self._count(len(waiting))
            try:
                results = await loop.run_in_executor(
                    self.executor, self.compute, [item for item, _ in waiting]
                )
            except Exception as err:  # every caller of the batch sees the failure, the loop goes on
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), result in zip(waiting, results, strict=True):
                if not future.done():
                    future.set_result(result)
