"""mlscale.timing: the peak memory a process reports is its own."""

from __future__ import annotations

import subprocess
import sys

import numpy as np


def test_peak_memory_is_the_process_own():
    """results.json's peak is the process's own high-water mark: a small process started
    from a large one (here: this one with 400 MiB touched) reports its own few tens of
    MiB, not the parent's memory that Linux's ru_maxrss carries across fork and exec."""
    ballast = np.ones(400 * 2**20 // 8)  # touched: 400 MiB resident in this process
    code = "from mlscale.timing import peak_rss_mib; print(peak_rss_mib())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr
    assert float(child.stdout) < 200, child.stdout
    assert ballast.sum() == ballast.size
