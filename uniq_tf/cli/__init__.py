"""The command-line tools installed with the package: ``uniq-train`` (uniq_tf.cli.train) and
``uniq-bops`` (uniq_tf.cli.bops). The exporters' commands live beside them in their packages:
``uniq-export-tflite`` (tflite_export.cli) and ``uniq-export-finn`` (fpga_export.cli)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_command(module_name: str, define_flags: Callable[[], None], main) -> None:
    """Defines a command's flags and runs ``main`` with absl. absl's ``--helpshort`` lists the
    flags of the main module, which for an installed console script is the script file, not
    the module that defined them: they are registered for both."""
    from absl import app, flags

    define_flags()
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)
