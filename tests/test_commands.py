"""The commands' errors: a bad flag is one line that names it, not absl's usage text."""

import os
import subprocess
import sys


def test_a_script_error_is_one_line_not_the_usage(tmp_path):

    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "tflite_export.cli", f"--model={tmp_path / 'missing.h5'}"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    lines = [line for line in result.stderr.splitlines()
             if not line.startswith(("WARNING: All log", "E0000", "W0000", "I0000"))]
    assert result.returncode == 1
    assert lines == [f"--model {str(tmp_path / 'missing.h5')!r} does not exist; run "
                     "uniq-train first. (pass --helpshort to see the flags)"], lines
