"""Benchmarks of uniq_tf against its peers (measurements, not tests).

A folder of the repository, not part of the installed package: run each one from the
repository root as a module, ``.venv/bin/python -m bench.<name>`` (``make bench`` runs them all).

- ``bench/accuracy.py``: accuracy per bit width and per BOP on the digits data set, UNIQ against
  k-quantile with a straight-through estimator, TFMOT uniform QAT, TFMOT weight clustering and
  post-training quantization, several seeds from the same trained float model.
- ``bench/train_speed.py``: train-step time of UNIQ and TFMOT 8-bit QAT relative to float.
- ``bench/deploy.py``: TFLite and packed sizes, LiteRT latency of float vs int8.
- ``bench/run_all.py``: all three, writing JSON, markdown tables, the plot and
  ``docs/benchmarks.md`` (``make bench``; ``make bench-quick`` for the quick run, which CI runs).
"""
