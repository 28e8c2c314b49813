"""Synthetic Michaelis-Menten data: the sample engine, datasets, pipelines, statistics."""

# Bump when a change alters any generated number: it keys the statistics caches and is part of every
# run folder's ledger (a run folder made by another engine version is refused, docs/results.md).
# Kept here, not in kinetics.py, so that reading a run folder's ledger loads no Numba.
ENGINE_VERSION = 2
