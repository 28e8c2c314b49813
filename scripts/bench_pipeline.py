"""tf.data pipeline vs the engine alone, and peak memory while streaming, in one run.

Prints a JSON object as its last line: pipeline_samples_per_s (normalised,
batched training data out of tf.data, consumed by TensorFlow's own loop),
engine_samples_per_s (the compiled engine alone, same run), their ratio (the
median over three rounds that time the two alternately, so that the shared
machine's swings hit both alike),
handoff_ceiling_samples_per_s (the same pipeline fed ready arrays: what
TensorFlow's numpy_function/unbatch hand-off alone allows), and
peak_rss_mb_10k / peak_rss_mb_1m (peak RSS of a process streaming 10,000 and
1,000,000 training samples).

`feeds` (alone with --feeds): samples/s of TR's training batches (dmedium, batch 512) through
today's `BatchSource.chunk` calls, the `ChunkProducer` (consumer only releasing) at several chunk
sizes, and the tf.data feed (`make_dataset`) at several CHUNK_SAMPLES, timed round-robin in six
short rounds; `*_over_chunk_calls` are the medians of the per-round ratios to the first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from bionn.backend.tensorflow import make_dataset
from bionn.clock import EpochClock
from bionn.config.compose import compose_run
from bionn.config.dataset import resolve_dataset
from bionn.data import pipeline as pipeline_module
from bionn.data.dataset import KineticsDataset
from bionn.data.pipeline import CHUNK_SAMPLES, batch_source
from bionn.data.producer import ChunkProducer, batches_per_chunk
from bionn.data.stats import load_or_compute_statistics

STATS_SAMPLES = 4096


def dataset(train_samples: int) -> KineticsDataset:
    """dbig, resized so that its training split holds `train_samples`."""
    from omegaconf import OmegaConf

    cfg = resolve_dataset("dbig")
    cfg = OmegaConf.merge(cfg, {"shape": {"n_samples": max(1000, math.ceil(train_samples / 0.8))}})
    return KineticsDataset(cfg)


def drain(pipeline, batches: int) -> int:
    """Consume batches inside TensorFlow's own loop (as Keras' fit does); returns the samples seen."""
    import tensorflow as tf

    def count(total, batch):
        return total + tf.shape(batch[0], out_type=tf.int64)[0]

    return int(pipeline.take(batches).reduce(tf.constant(0, tf.int64), count))


def stream(samples: int, cache: str) -> None:
    """Child process: stream `samples` training samples, print peak RSS in MB."""
    ds = dataset(samples)
    stats = load_or_compute_statistics(ds, STATS_SAMPLES, cache, progress=False)
    source = batch_source(ds, "train", stats, EpochClock())
    seen = drain(make_dataset(source), math.ceil(samples / ds.batch_size))
    assert seen >= samples, seen
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def rates(seconds: float, cache: str, rounds: int = 3) -> tuple[float, float, float, float]:
    """Engine and pipeline timed alternately, `rounds` times each, so machine noise hits both alike.

    Returns the total rates of both, the median of the per-round ratios, and the hand-off ceiling.
    """
    ds = dataset(10**6)
    stats = load_or_compute_statistics(ds, STATS_SAMPLES, cache, progress=False)
    ds.generate(np.arange(64), concentrations=False)
    pipeline = make_dataset(batch_source(ds, "train", stats, EpochClock()))
    drain(pipeline.take(40), 40)  # trace and warm up
    engine_n = engine_t = pipe_n = pipe_t = 0.0
    ratios = []
    for _ in range(rounds):
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds / rounds:
            ds.generate(np.arange(n, n + CHUNK_SAMPLES), concentrations=False)
            n += CHUNK_SAMPLES
        engine = n / (time.perf_counter() - start)
        engine_n, engine_t = engine_n + n, engine_t + n / engine
        batches = int(engine * seconds / rounds / ds.batch_size)
        start = time.perf_counter()
        seen = drain(pipeline, batches)
        elapsed = time.perf_counter() - start
        pipe_n, pipe_t = pipe_n + seen, pipe_t + elapsed
        ratios.append(seen / elapsed / engine)
    batches = int(engine_n / engine_t * seconds / rounds / ds.batch_size)
    return pipe_n / pipe_t, engine_n / engine_t, float(np.median(ratios)), handoff_ceiling(ds, stats, batches)


def handoff_ceiling(ds: KineticsDataset, stats, batches: int) -> float:
    """The same pipeline with generation replaced by ready arrays: TensorFlow's own hand-off cost."""
    source_class = pipeline_module.BatchSource
    ready = source_class(ds, "train", stats, EpochClock(), ds.batch_size).samples(0, CHUNK_SAMPLES)
    original = source_class.samples
    source_class.samples = lambda self, lo, hi: tuple(a[: hi - lo] for a in ready)
    try:
        start = time.perf_counter()
        seen = drain(make_dataset(batch_source(ds, "train", stats, EpochClock())), batches)
        return seen / (time.perf_counter() - start)
    finally:
        source_class.samples = original


def tr_source(cache: str, chunk_samples: int = CHUNK_SAMPLES):
    """TR's training batches (dmedium, batch 512, fresh samples each epoch), tf.data chunks of
    `chunk_samples` (pipeline.CHUNK_SAMPLES is read when the source is made)."""
    ds = KineticsDataset(compose_run("experiment=TR").dataset)
    stats = load_or_compute_statistics(ds, STATS_SAMPLES, cache, progress=False)
    saved, pipeline_module.CHUNK_SAMPLES = pipeline_module.CHUNK_SAMPLES, chunk_samples
    try:
        return batch_source(ds, "train", stats, EpochClock())
    finally:
        pipeline_module.CHUNK_SAMPLES = saved


def chunk_calls(source, samples: int) -> int:
    """Today's chunk path without TensorFlow: BatchSource.chunk called in turn (tf.data's map calls it)."""
    seen, c = 0, 0
    while seen < samples:
        features, _ = source.chunk(c % source.n_chunks, source.per_chunk)
        seen, c = seen + features.shape[0] * features.shape[1], c + 1
    return seen


def producer_feed(producer: ChunkProducer, samples: int) -> int:
    """The ChunkProducer with a consumer that only releases each chunk, epoch after epoch."""
    seen, epoch = 0, 0
    while seen < samples:
        for chunk in producer.epoch(epoch):
            seen += chunk.n * chunk.batch
            chunk.release()
            if seen >= samples:
                break
        epoch += 1
    return seen


def tfdata_feed(source):
    """The tf.data feed (make_dataset), drained by TensorFlow's own loop, epoch after epoch."""
    pipeline = make_dataset(source).repeat()
    return lambda samples: drain(pipeline, math.ceil(samples / source.batch_size))


def feeds(seconds: float, cache: str, rounds: int = 6) -> dict:
    """samples/s of every feed of TR's batches, each timed for about `seconds` / rounds per round."""
    source = tr_source(cache)
    runs = {"chunk_calls": lambda n: chunk_calls(source, n)}
    for mb in (8, 32, 64, 128):
        producer = ChunkProducer(source, batches_per_chunk(source, mb * 2**20))
        runs[f"producer_{mb}mb"] = lambda n, p=producer: producer_feed(p, n)
    for chunk_samples in (1024, 2048, 4096, 8192):
        runs[f"tfdata_chunk_{chunk_samples}"] = tfdata_feed(tr_source(cache, chunk_samples))
    rate = 0.0
    for run in runs.values():
        start = time.perf_counter()
        run(8192)  # compile, trace, warm up
        rate = rate or 8192 / (time.perf_counter() - start)
    per_run = rate * seconds / rounds  # samples for about `seconds` / rounds of the first feed
    totals = {name: [0, 0.0] for name in runs}
    ratios = {name: [] for name in runs}
    for _ in range(rounds):
        rates = {}
        for name, run in runs.items():
            start = time.perf_counter()
            seen = run(int(per_run))
            elapsed = time.perf_counter() - start
            totals[name][0] += seen
            totals[name][1] += elapsed
            rates[name] = seen / elapsed
        for name in runs:
            ratios[name].append(rates[name] / rates["chunk_calls"])
        print({name: round(rate) for name, rate in rates.items()}, file=sys.stderr)
    result = {f"{name}_samples_per_s": round(n / t) for name, (n, t) in totals.items()}
    result |= {f"{name}_over_chunk_calls": round(float(np.median(r)), 3) for name, r in ratios.items()}
    return result


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--seconds", type=float, default=12.0, help="per side, split over 3 rounds")
    parser.add_argument("--feeds", action="store_true", help="only the feeds of TR's batches")
    parser.add_argument("--stream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream:
        stream(args.stream, args.cache)
        return
    with tempfile.TemporaryDirectory() as cache:
        feed_rates = feeds(args.seconds / 3, cache)
        if args.feeds:
            print(json.dumps(feed_rates | {"machine": machine()}))
            return
        pipeline, engine, ratio, ceiling = rates(args.seconds, cache)
        rss = {}
        for label, n in (("10k", 10_000), ("1m", 1_000_000)):
            out = subprocess.run(
                [sys.executable, __file__, "--stream", str(n), "--cache", cache],
                capture_output=True,
                text=True,
                check=True,
            )
            rss[label] = float(out.stdout.strip().splitlines()[-1])
    result = {
        "pipeline_samples_per_s": round(pipeline),
        "engine_samples_per_s": round(engine),
        "pipeline_over_engine": round(ratio, 3),
        "handoff_ceiling_samples_per_s": round(ceiling),
        "peak_rss_mb_10k": round(rss["10k"], 1),
        "peak_rss_mb_1m": round(rss["1m"], 1),
        "rss_growth": round(rss["1m"] / rss["10k"] - 1, 4),
        "feeds": feed_rates,
        "machine": machine(),
    }
    if not args.json:
        print(f"pipeline {pipeline:,.0f}/s vs engine {engine:,.0f}/s; RSS {rss}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
