"""TEMPORARY stand-in (the lead's branch): replaced by the engine helper's producer at merge."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bionn.data.pipeline import BatchSource


@dataclass
class Chunk:
    first: int
    n: int
    batch: int
    features: np.ndarray
    labels: np.ndarray

    def release(self) -> None:
        pass


def batches_per_chunk(source: BatchSource, target_bytes: int = 32 << 20) -> int:
    per_batch = source.batch_size * int(np.prod(source.ds.feature_shape)) * 4
    return max(1, min(target_bytes // per_batch, source.split_size // source.batch_size))


class ChunkProducer:
    def __init__(self, source: BatchSource, batches_per_chunk: int, slots: int = 3):
        self.source, self.k = source, batches_per_chunk

    def plan(self):
        s = self.source
        full = s.split_size // s.batch_size
        out = [(f, min(self.k, full - f), s.batch_size) for f in range(0, full, self.k)]
        if s.split_size % s.batch_size:
            out.append((full, 1, s.split_size % s.batch_size))
        return out

    def epoch(self, epoch):
        s = self.source
        s.clock.epoch = epoch
        for first, n, batch in self.plan():
            pos = np.arange(first * s.batch_size, first * s.batch_size + n * batch)
            f, lab = s.positions(pos)
            yield Chunk(first, n, batch, f.reshape(n, batch, *f.shape[1:]), lab.reshape(n, batch, -1))

    def close(self):
        pass
