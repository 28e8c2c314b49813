"""Cost of generating data on the fly: model E trained from the pipeline vs from memory, one run.

Trains seed model E for a fixed number of steps fed by the on-the-fly tf.data
pipeline, and again from the same batches held in memory (alternating, twice
each). Prints a JSON object as its last line: samples_per_s_streamed,
samples_per_s_in_memory and input_bound_ratio (in-memory / streamed; 1.0 means
the input pipeline costs nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from bionn.config.compose import compose_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--steps", type=int, default=150, help="training steps per measurement")
    parser.add_argument("--dataset", default="dbig")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from bionn.data.dataset import KineticsDataset
    from bionn.data.pipeline import EpochClock, make_dataset
    from bionn.data.stats import load_or_compute_statistics
    from bionn.nn.model import build_model, compile_model

    cfg = compose_run("model=E", f"dataset={args.dataset}", conf=os.path.join(ROOT, "conf"))
    ds = KineticsDataset(cfg.dataset)
    with tempfile.TemporaryDirectory() as cache:
        stats = load_or_compute_statistics(ds, 4096, cache, progress=False)
    streamed = make_dataset(ds, "train", stats, EpochClock()).take(args.steps)
    in_memory = streamed.cache()
    for _ in in_memory:  # fill the cache: the very batches the streamed run trains on
        pass
    model = build_model(cfg.model, ds.feature_shape, ds.n_labels)
    compile_model(model, cfg.training.compile)
    model.fit(in_memory.take(10), verbose=0)  # trace and warm up

    seconds = {"streamed": 0.0, "in_memory": 0.0}
    for _ in range(2):
        for name, data in (("streamed", streamed), ("in_memory", in_memory)):
            start = time.perf_counter()
            model.fit(data, epochs=1, verbose=0, shuffle=False)
            seconds[name] += time.perf_counter() - start
    samples = 2 * args.steps * ds.batch_size
    result = {
        "samples_per_s_streamed": round(samples / seconds["streamed"], 1),
        "samples_per_s_in_memory": round(samples / seconds["in_memory"], 1),
        "input_bound_ratio": round(seconds["streamed"] / seconds["in_memory"], 3),
        "model": "E",
        "dataset": args.dataset,
        "batch_size": ds.batch_size,
        "steps": args.steps,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
    }
    if not args.json:
        print(
            f"streamed {result['samples_per_s_streamed']}/s, in memory {result['samples_per_s_in_memory']}/s"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
