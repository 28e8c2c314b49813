"""Synthetic Michaelis-Menten data: the sample engine, datasets, pipelines, statistics.

Its version, ENGINE_VERSION, lives in bionn.engine_version (run records read it without the engine)."""
