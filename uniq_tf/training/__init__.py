"""The pieces of ``uniq-train`` (uniq_tf.cli.train): config (settings and checks), strategy
(tf.distribute), resume (what lets a killed run resume) and pipeline (the run itself)."""
