"""Keras parts of bionn. Importing any bionn.nn module registers bionn's own Keras classes
(metrics, losses, the Residual block, the learning-rate schedule), so a saved model.keras loads."""

from bionn.nn import blocks, metrics, optim  # noqa: F401
