"""The pieces of examples/train.py: config (settings and checks), strategy (tf.distribute),
resume (what lets a killed run resume) and pipeline (the run itself)."""
