#!/usr/bin/env bash
# TR on Keras' JAX backend on a machine with JAX and no TensorFlow, no Keras and no network (the project's
# GPU machine: Python 3.12, JAX with CUDA; docs/testing.md): bionn runs from this tree, with the few
# small wheels it lacks.
#
#   scripts/gpu_jax.sh prepare   here, with network: the wheels into .whl/ (Python 3.12, manylinux),
#                                at the versions of requirements.lock; prints what the tree and wheels weigh
#   scripts/gpu_jax.sh imports   here: the third-party distributions a short jax training imports that
#                                the GPU machine lacks and .whl/ does not bring (check after code changes)
#   scripts/gpu_jax.sh run [--epochs N] [--batch N] [--samples-per-epoch N] [--precision P]
#                          [--probe-batch N] [--probe-batches N] [--no-install] [-- train.py overrides]
#                                there: installs .whl/ into /tmp/site (--no-index --no-deps), probes the
#                                resident ceiling (scripts/bench_train.py --ceilings), then runs
#                                `python3 train.py experiment=TR runtime.backend=jax` (the shipped TR unless
#                                told otherwise) and writes $OUT/summary.json: samples/s and test r2_mean
#
# run writes everything to $OUT as it goes (gpu_jax.log, environment.json, ceilings.json, train.log,
# run/*.json, summary.json), so a time-out still leaves what was done. Environment: PYTHON (python3),
# OUT (outputs/gpu_jax), PROBE_TIMEOUT_S (120), TRAIN_TIMEOUT_S (300). Described in BENCHMARKS.md and
# docs/testing.md ("The GPU machine").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

# What bionn's jax path imports that the GPU machine lacks (the rest it has: numpy, numba, llvmlite, scipy,
# h5py, ml-dtypes, absl-py, rich, PyYAML, pandas, matplotlib, jax); `imports` checks this list.
WHEELS=(keras namex optree packaging hydra-core omegaconf tqdm typing_extensions filelock)
SDIST=antlr4-python3-runtime # only an sdist on the index: built into a wheel here
MACHINE_HAS="numpy numba llvmlite scipy h5py ml_dtypes absl-py rich PyYAML pandas matplotlib jax jaxlib"
# Imported here only because they are installed: optional imports of Keras, JAX, Numba, pandas and
# omegaconf, and the machine's packages' own dependencies (matplotlib's, pandas', rich's, jax's).
# TensorFlow and tensorboard are not among them: `imports` names them if a jax run ever imports them.
OPTIONAL="requests urllib3 idna certifi charset-normalizer scikit-learn joblib threadpoolctl narwhals pyarrow
attrs cloudpickle flatbuffers opt_einsum setuptools hydra-submitit-launcher bionn Pygments markdown-it-py
mdurl cycler fonttools kiwisolver pillow pyparsing python-dateutil contourpy pytz tzdata six cffi pycparser"

pinned() { # name==version of each package as requirements.lock pins it
    local name
    for name in "$@"; do
        grep -i -E "^${name//[-_]/[-_]}==" requirements.lock || { echo "no pin for $name in requirements.lock" >&2; exit 1; }
    done
}

prepare() {
    local python=${PYTHON:-.venv/bin/python}
    mkdir -p .whl
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl $(pinned "${WHEELS[@]}")
    "$python" -m pip wheel -q --no-deps -w .whl $(pinned "$SDIST")
    ls -l .whl
    du -sh .whl
    echo "the tree (tracked and untracked, not ignored) plus .whl/, at most 64 MiB travel:"
    { git ls-files -co --exclude-standard; find .whl -type f; } | tr '\n' '\0' | du -ch --files0-from=- | tail -1
}

imports() { # a one-epoch jax training with -X importtime: each imported distribution not on the machine
    local python=${PYTHON:-.venv/bin/python} dir
    dir=$(mktemp -d)
    KERAS_BACKEND=jax "$python" -X importtime train.py experiment=TR runtime.backend=jax logger=none \
        training.epochs=1 dataset.shape.n_samples=7200 training.use_stats_of=1024 \
        "runtime.stats_cache_dir=$dir/stats" "hydra.run.dir=$dir/run" 2>"$dir/imports.txt" >/dev/null ||
        echo "the training failed (its log: $dir/run/train.log); the list is what it imported until then"
    "$python" - "$dir/imports.txt" "$MACHINE_HAS ${WHEELS[*]} $SDIST" "$OPTIONAL" <<'EOF'
import importlib.metadata as md
import re
import sys

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

tops = set()
for line in open(sys.argv[1]):
    if line.startswith("import time:") and "|" in line:
        tops.add(line.rsplit("|", 1)[1].strip().split(".")[0])
dists = md.packages_distributions()
imported = {norm(d) for top in tops for d in dists.get(top, [])}
known, optional = ({norm(n) for n in arg.split()} for arg in sys.argv[2:4])
print("imported and not brought:", " ".join(sorted(imported - known - optional)) or "none")
print("imported, optional or the machine's dependencies:", " ".join(sorted(imported & optional)))
EOF
}

run_there() {
    local python=${PYTHON:-python3} epochs="" batch="" samples="" precision="" install=1
    local probe_batch=4096 probe_batches=64 extra=() called="$*"
    while (($#)); do
        case $1 in
            --epochs) epochs=$2; shift 2 ;;
            --batch) batch=$2; shift 2 ;;
            --samples-per-epoch) samples=$2; shift 2 ;;
            --precision) precision=$2; shift 2 ;;
            --probe-batch) probe_batch=$2; shift 2 ;;
            --probe-batches) probe_batches=$2; shift 2 ;;
            --no-install) install=0; shift ;;
            --) shift; extra=("$@"); break ;;
            *) echo "unknown option $1 (see the top of $0)" >&2; exit 2 ;;
        esac
    done
    OUT=${OUT:-$ROOT/outputs/gpu_jax}
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/gpu_jax.log") 2>&1
    echo "$(date -u +%FT%TZ) start: $0 run $called"
    if ((install)); then
        "$python" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site:$ROOT
    else
        export PYTHONPATH=$ROOT
    fi
    export KERAS_BACKEND=jax
    "$python" -c 'import json, platform, jax, keras
print(json.dumps({"python": platform.python_version(), "jax": jax.__version__, "keras": keras.__version__,
                  "devices": [str(d) for d in jax.devices()]}))' | tee "$OUT/environment.json"
    nvidia-smi -L 2>/dev/null || true

    local overrides=(experiment=TR runtime.backend=jax logger=none runtime.stats_cache_dir=/tmp/bionn-stats)
    [[ -n $epochs ]] && overrides+=("training.epochs=$epochs")
    [[ -n $batch ]] && overrides+=("dataset.shape.batch_size=$batch")
    # TR's splits are 5/6, 1/12, 1/12 of n_samples: the training split gets samples-per-epoch
    [[ -n $samples ]] && overrides+=("dataset.shape.n_samples=$((samples * 6 / 5))")
    [[ -n $precision ]] && overrides+=("training.precision=$precision")
    overrides+=("${extra[@]}")

    echo "$(date -u +%FT%TZ) resident ceiling: batch $probe_batch, $probe_batches batches"
    timeout "${PROBE_TIMEOUT_S:-120}" "$python" scripts/bench_train.py --ceilings --rounds 3 \
        --ceiling-batches "$probe_batches" --ceiling-overrides "dataset.shape.batch_size=$probe_batch" \
        ${precision:+"training.precision=$precision"} | tail -1 | tee "$OUT/ceilings.json" ||
        echo "the ceiling probe failed or timed out"

    echo "$(date -u +%FT%TZ) train.py ${overrides[*]}"
    local run=/tmp/gpu_jax_run status=0
    rm -rf "$run"
    timeout "${TRAIN_TIMEOUT_S:-300}" "$python" train.py "${overrides[@]}" "hydra.run.dir=$run" \
        2>&1 | tee "$OUT/train.log" || status=$?
    mkdir -p "$OUT/run"  # the records, not the models (4 x 15 MB)
    cp "$run"/{final_results,info,attempts,error}.json "$run/history.csv" "$OUT/run/" 2>/dev/null || true
    "$python" - "$OUT" "${overrides[*]}" <<'EOF' | tee "$OUT/summary.json"
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
final_path = out / "run" / "final_results.json"
final = json.loads(final_path.read_text()) if final_path.exists() else {}
summary = {"command": f"python3 train.py {sys.argv[2]}", "status": final.get("status"), "error": final.get("error")}
if final.get("evaluation"):  # a finished training (a failed one has its error and no evaluation)
    summary.update(
        samples_per_s=final["train_samples_per_s"],
        train_samples=final["train_samples"],
        fit_s=final["training_time_s"],
        epochs=final["epochs_completed"],
        r2_mean=final["evaluation"]["test"]["r2_mean"],
        meets_1m_samples_per_s=final["train_samples_per_s"] >= 1_000_000,
    )
ceilings = out / "ceilings.json"
if ceilings.exists() and ceilings.read_text().strip():
    summary["ceilings"] = json.loads(ceilings.read_text())
print(json.dumps(summary))
EOF
    echo "$(date -u +%FT%TZ) end: train.py exit $status"
    return "$status"
}

case ${1:-} in
    prepare) prepare ;;
    imports) imports ;;
    run) shift; run_there "$@" ;;
    *) sed -n '2,18p' "$0"; exit 2 ;;
esac
