"""Parsing and validating request input away from the event loop, with a bound.

What: `ParsePool.run(fn, *args, size=...)` runs a pure, CPU-bound function (JSON decoding,
YAML parsing and validation) and returns its result or raises its exception.

Why: a 1 MiB upload of hostile YAML costs about a second of CPU to refuse, all of it Python
holding the interpreter lock. On a worker *thread* the event loop still had to win the lock
back after every system call, and /healthz took 25 to 165 ms while four such uploads were
validated (issue 9 asks for under 50 ms). In a worker *process* the loop never waits for it.
Small inputs (at most INLINE_BYTES) stay on a worker thread: they take a few milliseconds, and
most tests and clients never start a process.

Cost: the first large input starts the worker processes (spawned, about half a second, then
kept until the app stops); each large input is pickled to a worker and back (about 1 ms per
MiB). At most `workers` inputs are parsed at once, whatever the number of uploads; the others
wait their turn in the pool's queue.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from controlplane.domain import Unavailable

__all__ = ["INLINE_BYTES", "ParsePool"]

T = TypeVar("T")
INLINE_BYTES = 65_536


class ParsePool:
    def __init__(self, workers: int = 2) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._limiter: anyio.CapacityLimiter | None = None  # made on the event loop
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: Any, size: int) -> T:
        """`fn(*args)` on a worker thread (size <= INLINE_BYTES) or a worker process.

        `fn` must be a module-level function and its arguments, result and exceptions
        picklable (the documents layer's errors are).
        """
        if size <= INLINE_BYTES:
            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(self.workers)
            return await anyio.to_thread.run_sync(
                functools.partial(fn, *args), limiter=self._limiter
            )
        executor = self._start()
        try:
            return await asyncio.wrap_future(executor.submit(fn, *args))
        except BrokenProcessPool:
            # A worker died (killed, out of memory): start afresh for the next request.
            with self._lock:
                if self._executor is executor:
                    self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)
            raise Unavailable("the input parser restarted; nothing was changed, retry") from None

    def _start(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                # spawn, not fork: this process has threads (event loop, database pool).
                self._executor = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with_parent,
                    initargs=(os.getpid(),),
                )
            return self._executor

    async def aclose(self) -> None:
        """Stop the worker processes (queued work is cancelled), without blocking the loop."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)


def _exit_with_parent(parent_pid: int) -> None:
    """In a worker: exit when the control plane is gone, even killed with SIGKILL.

    A worker waits on a queue whose writing end it also holds, so it would never see the
    parent go; a daemon thread polls the parent pid instead (once a second, no work).
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
