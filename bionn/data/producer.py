"""Chunks of many batches generated ahead, in a background thread, into a ring of preallocated slots: the
feed of a training loop that steps the device a chunk per call (a jitted scan over its batches).

A `ChunkProducer` allocates its `slots` buffers once, each as big as its largest chunk. For an epoch its
thread fills the free slots in order (`BatchSource.fill`: the engine's kernel releases the GIL, so
generation runs beside the consumer's Python) and `epoch` yields them in that order as `Chunk`s. The
consumer releases a chunk once nothing reads its arrays any more (see `Chunk.release`);
its slot is then refilled. While every slot is held, the thread waits; at the end of an epoch it runs on
into the next one. The numbers are `BatchSource.batch`'s, bit for bit. The thread ends when the consumer
stops early (a break, an exception, KeyboardInterrupt: the generator closes), when another epoch than
the next is asked for, or on `close`; an exception in the thread is raised in the consumer. This module
imports no framework.
"""

from __future__ import annotations

import math
import queue
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from bionn.data.dataset import aligned_empty
from bionn.data.pipeline import BatchSource

# Bytes of features per chunk: 32 MB is 10 of TR's batches of 512 (501 x 3 float32 = 6 KB a sample),
# tens of ms of generation on 2 cores, 4 ms at the GPU machine's 1.3M samples/s: the Python around each
# chunk stays small beside it. On 2 loaded cores (scripts/bench_pipeline.py --feeds, two runs on
# 2026-12-04) the producer alone was fastest at 32 MB: 1.51x and 1.30x today's chunk calls, against
# 1.41x/1.24x at 8 MB, 1.41x/1.11x at 64 MB, 1.25x/1.00x at 128 MB; bigger also costs memory
# (slots x CHUNK_BYTES) and a longer wait for the first chunk.
CHUNK_BYTES = 32 * 2**20


@dataclass
class Chunk:
    """Batches first .. first + n - 1 of one epoch, in a slot of the producer's ring."""

    first: int
    n: int
    batch: int  # samples per batch in this chunk (the last, partial batch: the remainder)
    features: np.ndarray  # (n, batch, *feature_shape), a view of the slot
    labels: np.ndarray  # (n, batch, n_labels)
    slot: int = field(repr=False)
    free: queue.SimpleQueue = field(repr=False, compare=False)  # the producer's free slots
    released: bool = field(default=False, repr=False, compare=False)

    def release(self) -> None:
        """The consumer is done with the arrays: the slot may be refilled (a second call does nothing).
        Only once nothing reads them any more: on CPU, jax.device_put adopts an aligned array, no copy."""
        if not self.released:
            self.released = True
            self.free.put(self.slot)


@dataclass(eq=False)
class _Run:
    """The thread and its queues: slots free to fill, chunks (or the thread's error) filled in order;
    `next_epoch`: the epoch whose chunks come next. The thread holds the run, not the producer, so that
    a producer dropped without `close` is collected, and its finalizer ends the thread."""

    free: queue.SimpleQueue
    next_epoch: int
    filled: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def produce(self, source: BatchSource, plan: list, slots: tuple[list, list], epoch: int) -> None:
        """Fill free slots with the chunks of `epoch`, then of the epochs after it, until stopped."""
        try:
            while plan:
                for first, n, batch in plan:
                    slot = self.free.get()
                    if self.stop.is_set():
                        return
                    features, labels = slots[0][slot], slots[1][slot]
                    source.fill(epoch, first, n, features, labels)
                    chunk = Chunk(first, n, batch, features[:n, :batch], labels[:n, :batch], slot, self.free)
                    self.filled.put(chunk)
                epoch += 1
        except BaseException as error:  # the consumer raises it
            self.filled.put(error)

    def end(self) -> None:
        """Stop the thread and wait for it (it finishes the chunk it is filling, if any)."""
        self.stop.set()
        self.free.put(None)  # wakes a thread that waits for a free slot
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join()


def _end_all(active: list[_Run]) -> None:
    while active:
        active.pop().end()


class ChunkProducer:
    """A background producer of one split's chunks (`plan`), `slots` of them at most filled ahead."""

    def __init__(self, source: BatchSource, batches_per_chunk: int, slots: int = 3):
        if batches_per_chunk < 1 or slots < 1:
            raise ValueError(
                f"ChunkProducer: batches_per_chunk ({batches_per_chunk}) and slots ({slots}) >= 1"
            )
        self.source = source
        self.batches_per_chunk = batches_per_chunk
        most = max(n for _, n, _ in self.plan()) if source.split_size else 1
        shape = (most, source.batch_size)
        self._slots = (
            [aligned_empty(shape + source.ds.feature_shape, np.float32) for _ in range(slots)],
            [aligned_empty(shape + (source.ds.n_labels,), np.float32) for _ in range(slots)],
        )
        self._active: list[_Run] = []  # the run whose thread is alive, if any
        weakref.finalize(self, _end_all, self._active)

    def plan(self) -> list[tuple[int, int, int]]:
        """(first batch, batches, samples per batch) of every chunk of an epoch: the full chunks, then the
        full batches left over as one chunk, then the partial last batch as its own chunk."""
        size, per = self.source.batch_size, self.batches_per_chunk
        full = self.source.split_size // size
        chunks = [(first, min(per, full - first), size) for first in range(0, full, per)]
        remainder = self.source.split_size % size
        return chunks + ([(full, 1, remainder)] if remainder else [])

    def epoch(self, epoch: int) -> Iterator[Chunk]:
        """The chunks of an epoch, in order. The thread runs on into the next epoch while slots are free, so
        that epoch's first chunks are ready when it is asked for (of the training split: epoch + 1; any epoch
        of the others, whose batches are the same every epoch). Any other epoch ends the thread and reclaims
        every slot: chunks handed out before must no longer be in use."""
        run = self._active[0] if self._active else None
        if run is None or (self.source.split == "train" and run.next_epoch != epoch):
            self.close()
            run = self._start(epoch)
        completed = False
        try:
            for _ in self.plan():
                item = run.filled.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
            completed = True
            run.next_epoch = epoch + 1
        finally:
            if not completed:  # a break, an exception, KeyboardInterrupt, a generator closed early
                run.end()
                if run in self._active:
                    self._active.remove(run)

    def close(self) -> None:
        """End the thread (after the chunk it is filling, if any). Call it when the training ends: until
        then a finished epoch's thread waits, chunks filled ahead, for the next (a producer that is
        garbage-collected ends it too)."""
        _end_all(self._active)

    def _start(self, epoch: int) -> _Run:
        run = _Run(free=queue.SimpleQueue(), next_epoch=epoch)
        for slot in range(len(self._slots[0])):
            run.free.put(slot)
        args = (self.source, self.plan(), self._slots, epoch)
        name = f"chunks-{self.source.split}"
        run.thread = threading.Thread(target=run.produce, args=args, name=name, daemon=True)
        run.thread.start()
        self._active.append(run)
        return run


def batches_per_chunk(source: BatchSource, target_bytes: int = CHUNK_BYTES) -> int:
    """Batches that make about `target_bytes` of features: at least 1, at most the split's full batches."""
    batch_bytes = source.batch_size * math.prod(source.ds.feature_shape) * np.dtype(np.float32).itemsize
    return max(1, min(target_bytes // batch_bytes, source.split_size // source.batch_size))
