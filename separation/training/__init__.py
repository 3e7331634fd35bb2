"""Training-time code of the separator, apart from what a run needs (as Open-Unmix keeps it):
the source bank of real recordings (``bank``), the on-the-fly legacy mixer (``mixer``), datasets
(``dataset``), the trainer (``train``, also ``python -m filmrestore.separation.training.train``),
SI-SDR metrics and the evaluation on a held-out split (``metrics``, ``evaluate``), function-preserving
growth of a trained network (``grow``), and the
lent-GPU training script (``train_device.sh``). Nothing in :mod:`filmrestore.separation`'s
runtime (engine, separators, checkpoints) imports it."""
