"""The bottom floor of bionn: the config schema, its checks, and the tools around it.

Nothing here imports other bionn code (but the atomic writers of bionn.io), Numba or
TensorFlow, so composing, checking and importing configs is fast and the data, model
and training code can all depend on it. tests/test_config_layering.py holds it to that.
"""
