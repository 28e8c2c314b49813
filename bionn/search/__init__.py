"""Hyperparameter search: its schema and checked definition (schema.py, space.py), the search folder that
holds its Optuna study (folder.py), and the worker jobs that train its trials (worker.py).
The sweeper that starts a search is the Hydra plugin hydra_plugins/bionn_search; bionn.report reads it."""
