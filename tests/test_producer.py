"""The feed of a chunked training loop: the GIL-free kernel, generation in place, BatchSource.fill and the
ChunkProducer's ring (bit-identical to BatchSource.batch, and a thread that always ends)."""

from __future__ import annotations

import gc
import signal
import threading

import numpy as np
import pytest
from conftest import make_dataset

from bionn.clock import EpochClock
from bionn.data.dataset import Scratch
from bionn.data.pipeline import ReplicaShard, batch_source
from bionn.data.producer import CHUNK_BYTES, ChunkProducer, batches_per_chunk
from bionn.data.stats import compute_statistics

# 150 training samples: batches of 16 leave a partial batch of 6.
SHAPE = {"name": "tiny", "shape.n_samples": 200, "shape.batch_size": 16, "shape.n_shards": 4}
SHAPE |= {"shape.shuffle_buffer_size": 50, "shape.splits": [0.75, 0.125, 0.125]}


def source(split="train", epoch=0, fresh=True, label="seed", shard=None):
    ds = make_dataset(**SHAPE, **{"shape.fresh_train_each_epoch": fresh, "label": label})
    stats = compute_statistics(ds, 64, progress=False)
    extra = {"shard": shard} if shard else {}
    return batch_source(ds, split, stats, EpochClock(epoch=epoch), **extra)


def batches(src, epoch):
    """Every batch of an epoch through BatchSource.batch (the tf.data path's per-batch call)."""
    src.clock.epoch = epoch
    return [src.batch(np.int64(b)) for b in range(src.n_batches)]


def chunk_threads():
    return [t for t in threading.enumerate() if t.name.startswith("chunks-")]


def test_the_parallel_kernel_lets_python_run_while_it_generates():
    """Main-thread Python sees the features half written: it ran while the kernel was inside the call. A
    kernel that held the GIL would let it see them only before (all NaN) or after (none NaN). (Numba's
    parallel region releases the GIL even without nogil=True: this checks the outcome, not the flag.)"""
    ds = make_dataset(**{"shape.n_samples": 20000})
    n = 4000
    indices = np.arange(n, dtype=np.int64)
    scratch = Scratch(ds, n)
    norm = (np.zeros((ds.n_times, ds.n_components)), np.ones((ds.n_times, ds.n_components)))
    ds.generate_into(
        indices[:8], np.empty((8, ds.n_times, ds.n_components), np.float32), scratch, normalise=norm
    )
    seen_half_written = False
    for _ in range(5):  # each try is one call of a second or so; one sighting proves it
        features = np.full((n, ds.n_times, ds.n_components), np.nan, np.float32)
        started, finished = threading.Event(), threading.Event()

        def generate(features=features, started=started, finished=finished):
            started.set()
            ds.generate_into(indices, features, scratch, normalise=norm)
            finished.set()

        thread = threading.Thread(target=generate)
        thread.start()
        started.wait()
        while not finished.is_set() and not seen_half_written:
            written = int(np.count_nonzero(~np.isnan(features[:, 0, 0])))
            seen_half_written = 0 < written < n
        thread.join()
        assert not np.isnan(features).any()
        if seen_half_written:
            break
    assert seen_half_written


def test_generate_into_a_reused_scratch_gives_generates_bits():
    ds = make_dataset(**SHAPE, label="relative")
    whole = ds.generate(np.arange(60), concentrations=False)
    scratch = Scratch(ds, 40)
    for lo, hi in ((0, 40), (40, 60), (10, 17)):
        features = np.empty((hi - lo, ds.n_times, ds.n_components))
        labels = ds.generate_into(np.arange(lo, hi), features, scratch, parallel=hi - lo > 10)
        np.testing.assert_array_equal(features, whole.features[lo:hi])
        np.testing.assert_array_equal(labels, whole.labels[lo:hi])
        np.testing.assert_array_equal(scratch.kinetic[: hi - lo], whole.kinetic[lo:hi])
    with pytest.raises(ValueError, match="scratch of at least 41 samples"):
        ds.generate_into(np.arange(41), np.empty((41, ds.n_times, ds.n_components)), scratch)
    with pytest.raises(ValueError, match="float32"):  # normalised features are float32
        ds.generate_into(np.arange(4), np.empty((4, ds.n_times, ds.n_components)), scratch, normalise=(0, 1))


@pytest.mark.parametrize("fresh", [True, False])
@pytest.mark.parametrize("label", ["seed", "relative"])
def test_fill_writes_the_batches_batch_gives(fresh, label):
    src = source(fresh=fresh, label=label)
    assert (src.n_batches, src.split_size % src.batch_size) == (10, 6)
    for epoch in (0, 3):
        expected = batches(src, epoch)
        src.clock.epoch = 99  # fill reads its epoch from the call, not the clock
        for first, n in ((0, 4), (4, 5), (9, 1)):
            features = np.full((5, 16, *src.ds.feature_shape), -1, np.float32)  # bigger than needed
            labels = np.full((5, 16, src.ds.n_labels), -1, np.float32)
            src.fill(epoch, first, n, features, labels)
            per = len(expected[first][0])
            for i in range(n):
                np.testing.assert_array_equal(features[i, :per], expected[first + i][0])
                np.testing.assert_array_equal(labels[i, :per], expected[first + i][1])
            assert (features[n:] == -1).all() and (labels[n:] == -1).all()  # only the rows asked for
            assert (features[:, per:] == -1).all() and (labels[:, per:] == -1).all()


def test_fill_of_other_splits_ignores_the_epoch():
    val = source("val")
    expected = batches(val, 0)
    features = np.empty((val.n_batches, 16, *val.ds.feature_shape), np.float32)
    labels = np.empty((val.n_batches, 16, val.ds.n_labels), np.float32)
    val.fill(5, 0, 1, features, labels)
    np.testing.assert_array_equal(features[0], expected[0][0])
    np.testing.assert_array_equal(labels[0], expected[0][1])


def test_fill_refuses_what_it_cannot_write():
    src = source()
    features = np.empty((10, 16, *src.ds.feature_shape), np.float32)
    labels = np.empty((10, 16, src.ds.n_labels), np.float32)
    for first, n in ((8, 2), (10, 1), (-1, 1), (0, 0)):  # 8..9 ends partial; 10 is past the split
        with pytest.raises(ValueError, match="train split, which has 10"):
            src.fill(0, first, n, features, labels)
    with pytest.raises(ValueError, match="C-contiguous"):
        src.fill(0, 0, 2, features[:, ::2], labels[:, ::2])
    with pytest.raises(ValueError, match="no ReplicaShard"):
        source(shard=ReplicaShard(0, 1, 2)).fill(0, 0, 1, features, labels)


def test_the_plan_covers_the_split_chunk_by_chunk():
    src = source()
    assert ChunkProducer(src, 4).plan() == [(0, 4, 16), (4, 4, 16), (8, 1, 16), (9, 1, 6)]
    assert ChunkProducer(src, 3).plan() == [(0, 3, 16), (3, 3, 16), (6, 3, 16), (9, 1, 6)]
    assert ChunkProducer(src, 20).plan() == [(0, 9, 16), (9, 1, 6)]
    assert batches_per_chunk(src) == 9  # at most the split's full batches
    assert batches_per_chunk(src, 16 * 501 * 3 * 4 * 2) == 2
    assert batches_per_chunk(src, 1) == 1
    assert CHUNK_BYTES // (512 * 501 * 3 * 4) >= 4  # TR's batches of 512 come several to a chunk


@pytest.mark.parametrize("slots", [1, 3])
def test_producer_chunks_are_the_batches_of_each_epoch(slots):
    src = source(label="relative")
    producer = ChunkProducer(src, 4, slots=slots)
    for epoch in (0, 1, 3, 0):  # 0 -> 1 goes on with the chunks filled ahead; 1 -> 3 and 3 -> 0 restart
        expected = batches(src, epoch)
        seen = []
        for chunk in producer.epoch(epoch):
            assert (chunk.first, chunk.n, chunk.batch) == producer.plan()[len(seen)]
            assert chunk.features.shape == (chunk.n, chunk.batch, *src.ds.feature_shape)
            for i in range(chunk.n):
                np.testing.assert_array_equal(chunk.features[i], expected[chunk.first + i][0])
                np.testing.assert_array_equal(chunk.labels[i], expected[chunk.first + i][1])
            seen.append(chunk.first)
            chunk.release()
            chunk.release()  # a second release changes nothing
        assert seen == [0, 4, 8, 9]
        assert len(chunk_threads()) == 1  # waiting, filled ahead, for the next epoch
    producer.close()
    assert not chunk_threads()


def test_producer_of_the_validation_split_serves_the_same_batches_every_epoch():
    val = source("val")
    expected = batches(val, 0)
    producer = ChunkProducer(val, 1, slots=2)
    for epoch in (0, 0, 5):
        chunks = [(c.features.copy(), c.labels.copy(), c.release()) for c in producer.epoch(epoch)]
        assert len(chunks) == len(expected) == 2  # 25 samples: a batch of 16 and one of 9
        for (features, labels, _), (want_f, want_l) in zip(chunks, expected, strict=True):
            np.testing.assert_array_equal(features[0], want_f)
            np.testing.assert_array_equal(labels[0], want_l)
    producer.close()


def test_producer_thread_ends_when_the_consumer_stops_early():
    producer = ChunkProducer(source(), 2, slots=2)
    for _chunk in producer.epoch(0):  # never released: the thread waits for a slot, then is stopped
        break
    assert not chunk_threads()
    with pytest.raises(KeyboardInterrupt):
        for chunk in producer.epoch(1):
            chunk.release()
            raise KeyboardInterrupt
    assert not chunk_threads()
    chunks = producer.epoch(2)
    next(chunks)
    producer.close()
    assert not chunk_threads()
    chunks.close()
    firsts = []
    for chunk in producer.epoch(2):  # every slot reclaimed
        firsts.append(chunk.first)
        chunk.release()
    assert firsts == [0, 2, 4, 6, 8, 9]
    assert len(chunk_threads()) == 1
    del producer, chunk  # dropped without close(): collected, and its finalizer ends the thread
    gc.collect()
    assert not chunk_threads()


def test_ctrl_c_gets_a_consumer_out_of_waiting_for_a_slot_it_holds():
    """Asking for the next chunk while holding every slot waits forever; Ctrl-C (here SIGALRM's handler
    raising KeyboardInterrupt) still ends the wait and the thread."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            for _chunk in ChunkProducer(source(), 2, slots=1).epoch(0):
                signal.setitimer(signal.ITIMER_REAL, 0.2)  # never released: the next one never comes
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not chunk_threads()


def test_an_error_in_the_producer_thread_reaches_the_consumer():
    sharded = source(shard=ReplicaShard(0, 1, 2))
    with pytest.raises(ValueError, match="no ReplicaShard"):
        for chunk in ChunkProducer(sharded, 2).epoch(0):
            chunk.release()
    assert not chunk_threads()
