"""The data engine's version: which samples a config generates (no code of the engine itself).

Bump ENGINE_VERSION when a change alters any generated number: it keys the statistics caches and is
part of every run folder's ledger (a run folder made by another engine version is refused,
docs/results.md). Kept apart from bionn.data so that run records read it without loading the engine.
"""

ENGINE_VERSION = 2
