"""Keras parts of bionn. Importing any bionn.nn module registers bionn's own Keras classes
(metrics, losses, the Residual and LogTimePooling layers, the learning-rate schedule, Standardise), so a saved
model.keras or inference_*.keras loads."""

from bionn.nn import blocks, inference, metrics, optim  # noqa: F401
