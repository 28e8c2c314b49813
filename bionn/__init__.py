"""bionn: Keras/TensorFlow models trained on synthetic Michaelis-Menten kinetics, launched with Hydra.

`bionn.load_model(run_dir, which="best")`: a finished run's network, raw features in, labels out
(bionn.trained; docs/using-models.md). Importing bionn alone loads no TensorFlow.
"""


def load_model(run_dir, which: str = "best"):
    """The inference model of a finished run folder (which: best or last); see bionn.trained."""
    from bionn.trained import load_model as load

    return load(run_dir, which)
