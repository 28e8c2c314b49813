"""The life of one run in its folder, step by step, as bionn.train.run tells it: claim (claim), the checks
that need no training (setup), build -> fit -> finish (training, finish), the files beside the model
(artefacts), signals (signals) and how an attempt that did not finish is recorded (ending)."""
