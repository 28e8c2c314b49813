"""bionn's hyperparameter search sweeper (Hydra loads sweeper plugins only from the hydra_plugins package)."""
