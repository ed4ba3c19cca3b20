"""Micro-batching: one queue of requests, forward workers that batch what is queued.

Micro-batching: concurrent requests are queued to one worker thread, which runs one
batched forward over what is queued (up to ``max_batch``). It waits for more (at most
``batch_window_ms``) only while other requests are still being decoded, so a lone
request never pays the window. The asyncio event loop only awaits a future; the queue
is bounded so overload gives a fast ``Overloaded`` error instead of unbounded memory.

Requests carry a priority (the miner gives the caller's stake): the workers take the
highest first (in arrival order among equals), and a full queue makes room for a request
by refusing the lowest queued one below it. Why here: bittensor's axon runs the priority
function but orders nothing by it (its executor step is a no-op), so under load a heavy
validator's request waited behind, or was refused after, any caller's (operator review).
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import torch

logger = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The request queue is full: refuse fast rather than queue without bound."""


def auto_max_batch(device: torch.device) -> int:
    """Micro-batch bound by default. On a GPU batching is nearly free. On a CPU it is not:
    one thread's time per image grows with the batch (NPR on 2 cores, measured: 46 ms at
    1, 57 at 4, 68 at 8), so CPU workers take one request at a time and concurrency
    comes from several workers instead (``auto_workers``)."""
    return 32 if device.type == "cuda" else 1


def auto_workers(device: torch.device, threads: int) -> int:
    """Forward workers by default: one on a GPU (it batches); on a CPU one per core of the
    thread budget, up to 4, since batching does not pay there (see docs/Performance.md)."""
    return 1 if device.type != "cpu" else max(1, min(4, threads))


class MicroBatcher:
    """A bounded request queue and the forward workers that drain it in micro-batches.

    ``forward`` maps a (B,3,H,W) batch to B probabilities (the predictor's
    ``predict_tensors``); workers start on the first ``submit``. ``threads`` is the
    intra-op thread budget the workers share (see ``_threads_for``)."""

    def __init__(self, forward: Callable[[torch.Tensor], list[float]], device: torch.device, max_batch: int = 1,
                 batch_window: float = 0.002, max_queue: int = 256, workers: int = 1, threads: int = 1):
        self.forward, self.device = forward, device
        self.max_batch, self.batch_window, self.workers, self.threads = max_batch, batch_window, workers, threads
        # (-priority, arrival, tensor, future): the highest priority first, then the earliest
        self._queue: queue.PriorityQueue = queue.PriorityQueue(maxsize=max_queue)
        self._arrival = itertools.count()
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()
        self._busy = 0  # workers running a forward right now
        self._busy_lock = threading.Lock()
        self._primary_busy = False
        self._helpers = threading.Condition()  # wakes helper workers when worker 0 is busy and work waits
        self._inflight = 0  # requests being decoded that will be submitted soon (a forming batch waits for them)
        self._inflight_lock = threading.Lock()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def inflight(self) -> int:
        return self._inflight

    def _make_room(self, priority: float) -> bool:
        """Make room in the full queue: drop the requests whose callers gave up (cancelled
        futures: they hold a slot until a worker skips them, so under load, with requests given
        up at their timeout, live ones were refused or evicted while dead ones kept the room),
        else refuse (``Overloaded``) the newest of the lowest-priority queued requests if its
        priority is below ``priority``; whether room was made."""
        with self._queue.mutex:
            heap = self._queue.queue
            live = [item for item in heap if not item[3].cancelled()]
            if len(live) < len(heap):
                heap[:] = live
                heapq.heapify(heap)
                self._queue.not_full.notify()
                return True
            if not heap:
                return False
            i = max(range(len(heap)), key=lambda j: heap[j][:2])  # lowest priority, latest arrival
            if -heap[i][0] >= priority:
                return False
            victim = heap[i][3]
            heap[i] = heap[-1]
            heap.pop()
            heapq.heapify(heap)
            self._queue.not_full.notify()
        if victim.set_running_or_notify_cancel():  # False: its caller had already given up
            victim.set_exception(Overloaded(f"prediction queue full ({self._queue.maxsize}): "
                                            f"room made for a request of higher priority ({priority:g})"))
        return True

    @contextlib.contextmanager
    def incoming(self, priority: float = 0.0):
        """Count one request as on its way (being decoded) while inside, so a batch being
        formed waits for it (at most ``batch_window``) instead of leaving without it.
        Raises ``Overloaded`` on entry, before any decoding, when the requests being decoded
        and those queued already reach the queue's bound (and no queued request has a lower
        ``priority``, else that one is refused instead): a flood would otherwise pile up in
        the decode pool's own unbounded queue (each holding its payload, up to 16 MiB) and be
        refused only after decoding."""
        with self._inflight_lock:
            limit, queued = self._queue.maxsize, self._queue.qsize()
            if limit > 0 and self._inflight + queued >= limit and not self._make_room(priority):
                raise Overloaded(f"{self._inflight} requests decoding and {queued} queued reach the limit ({limit})")
            self._inflight += 1
        try:
            yield
        finally:
            with self._inflight_lock:
                self._inflight -= 1

    def _ensure_worker(self) -> None:
        if len(self._workers) == self.workers and all(w.is_alive() for w in self._workers):
            return
        with self._busy_lock:
            self._stop.clear()
            self._workers = [w for w in self._workers if w.is_alive()]
            while len(self._workers) < self.workers:
                w = threading.Thread(target=self._run_worker, args=(len(self._workers),),
                                     name=f"bitmind-predictor-{len(self._workers)}", daemon=True)
                w.start()
                self._workers.append(w)

    def submit(self, tensor: torch.Tensor, priority: float = 0.0) -> Future:
        """Queue one (3,256,256) tensor; the returned future resolves to a probability (or to
        ``Overloaded`` if a request of higher priority takes its place while it waits)."""
        self._ensure_worker()
        fut: Future = Future()
        item = (-float(priority), next(self._arrival), tensor, fut)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            if not self._make_room(priority):
                raise Overloaded(f"prediction queue full ({self._queue.maxsize})") from None
            try:
                self._queue.put_nowait(item)
            except queue.Full:  # another request took the room first
                raise Overloaded(f"prediction queue full ({self._queue.maxsize})") from None
        if self.workers > 1:
            with self._helpers:
                self._helpers.notify()
        return fut

    def _get(self, timeout: float | None = None) -> tuple[torch.Tensor, Future]:
        """The queued request of highest priority as ``(tensor, future)`` (``timeout`` None: at
        once); raises ``queue.Empty``."""
        item = self._queue.get(timeout=timeout) if timeout is not None else self._queue.get_nowait()
        return item[2], item[3]

    def _first_item(self, index: int):
        """The next queued item for worker ``index`` (raises ``queue.Empty`` after a while).
        Worker 0 takes whatever comes; the other workers only help with what is queued
        while worker 0 is busy, so a lone request always gets worker 0 and every core."""
        if index == 0:
            return self._get(timeout=0.2)
        with self._helpers:
            self._helpers.wait_for(lambda: self._stop.is_set() or (self._primary_busy and self._queue.qsize() > 0),
                                   timeout=0.2)
        return self._get()

    @staticmethod
    def thread_counts(device: torch.device, threads: int, workers: int) -> tuple[int, ...]:
        """Every intra-op thread count ``_threads_for`` can give a forward (what a compiled
        model must be compiled for)."""
        if device.type != "cpu":
            return (threads,)
        return tuple(sorted({max(1, threads // busy) for busy in range(1, workers + 1)} | {1}))

    def _threads_for(self, index: int, busy: int) -> int:
        """Intra-op threads for worker ``index``'s next forward while ``busy`` workers (itself
        included) run one. Only worker 0 ever runs several (see ``single_threaded``: one live
        OpenMP team at a time): alone, it gets the whole budget (lowest latency); with
        company, one thread like the others, so the cores are shared, not oversubscribed
        (an OpenMP team whose threads wait for a descheduled sibling runs many times slower)."""
        if self.device.type != "cpu":
            return self.threads
        return max(1, self.threads // max(1, busy)) if index == 0 else 1

    def _run_worker(self, index: int = 0) -> None:
        my_threads = 0
        while not self._stop.is_set():
            try:
                first = self._first_item(index)
            except queue.Empty:
                continue
            if index == 0 and self.workers > 1:
                with self._helpers:
                    self._primary_busy = True
                    self._helpers.notify_all()
            items = [first]
            deadline = time.monotonic() + self.batch_window
            while len(items) < self.max_batch:
                try:
                    items.append(self._get())
                    continue
                except queue.Empty:
                    pass
                remaining = deadline - time.monotonic()
                if self._inflight <= 0 or remaining <= 0:
                    break  # nobody else is on the way: do not make this batch wait
                try:
                    items.append(self._get(timeout=remaining))
                except queue.Empty:
                    break
            # A request cancelled while queued (its caller timed out, disconnected or shut down)
            # leaves the batch; the others become running, so they can no longer be cancelled
            # and their answers can always be set (set_result on a cancelled future raises, and
            # that error used to fail every request of the batch).
            items = [item for item in items if item[1].set_running_or_notify_cancel()]
            if not items:
                if index == 0:
                    self._primary_busy = False
                continue
            with self._busy_lock:
                self._busy += 1
                busy = self._busy
            try:
                n = self._threads_for(index, busy)
                if n != my_threads:  # a per-thread setting: it sizes this worker's OpenMP team
                    torch.set_num_threads(n)
                    my_threads = n
                probs = self.forward(torch.stack([t for t, _ in items]))
                for (_, fut), p in zip(items, probs):
                    fut.set_result(p)
            except Exception as e:  # never kill the worker; fail just these requests
                logger.exception("batched forward failed")
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
            finally:
                with self._busy_lock:
                    self._busy -= 1
                if index == 0:
                    self._primary_busy = False

    def close(self) -> None:
        self._stop.set()
        with self._helpers:
            self._helpers.notify_all()
        for w in self._workers:
            w.join(timeout=2)
