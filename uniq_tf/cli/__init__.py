"""The command-line tools installed with the package: ``uniq-train`` (uniq_tf.cli.train) and
``uniq-bops`` (uniq_tf.cli.bops). The exporters' commands live beside them in their packages:
``uniq-export-tflite`` (tflite_export.cli) and ``uniq-export-finn`` (fpga_export.cli)."""
