"""The Triton kernels (CSR attention, one-pass aggregation), checked on
the CPU by Triton's interpreter.

``TRITON_INTERPRET=1`` must be set before Triton builds the kernels, and
must not leak into the rest of the suite, so the checks in
``_triton_interpreter_checks.py`` run in their own pytest subprocess.
Skipped when Triton is not installed (it is in the ``dev`` extra).
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed")

HERE = Path(__file__).parent
#: The attention kernel's checks and the one-pass aggregation's.
CHECKS = ["_triton_interpreter_checks.py", "_triton_aggregate_checks.py"]


@pytest.mark.parametrize("checks", CHECKS)
def test_triton_kernel_under_the_interpreter(checks):
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-W", "ignore::DeprecationWarning", str(HERE / checks)],
        cwd=HERE.parent, env=env, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
