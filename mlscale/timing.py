"""Wall and CPU time per phase, and the peak memory of this process."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Timings:
    """Wall and CPU time (this process, all its threads) per phase in seconds, and counts
    of work done (``counts``: e.g. the density passes over the grid)."""

    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the count ``name``."""
        self.counts[name] = self.counts.get(name, 0) + int(n)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to phase ``name``."""
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.cpu_seconds[name] = (self.cpu_seconds.get(name, 0.0)
                                      + time.process_time() - cpu)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process image. Not
    ru_maxrss: Linux carries it across fork and exec, so a process started from a large
    one (a test runner, a Python driver with torch loaded) would report its parent's
    memory. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS: taken as KiB).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
