"""The epoch being trained: set by the training loop, read by the data pipeline that serves it.

It lives below both (data knows no model, the model knows no data engine):
`bionn.nn.callbacks.EpochClockCallback` moves it, `bionn.data.pipeline` reads it.
"""


class EpochClock:
    """The epoch the training data should serve (set by `bionn.nn.callbacks.EpochClockCallback`)."""

    def __init__(self, epoch: int = 0):
        self.epoch = epoch
