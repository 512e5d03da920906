"""The per-rank cost model of a prediction: constants, predictions, measurements.

- :mod:`.constants`: :class:`BenchConstants`, one machine's measured costs, and their
  JSON file (read, write, default path).
- :mod:`.predict`: pure functions from the constants and a job's counts to what one
  rank holds, its peak memory and its time, and the fewest ranks within a budget
  (``mlscale plan``).
- :mod:`.measure`: runs shares of a prediction and fits the constants
  (``mlscale bench``); import it explicitly, it loads the descriptor and energy code.
"""

from .constants import BenchConstants, default_constants_path, read_constants, write_constants
from .predict import (
    RankLoad,
    memory_MiB,
    neighbours_per_point,
    network_macs,
    plan,
    rank_load,
    smallest_ranks,
    time_s,
)

__all__ = ["BenchConstants", "RankLoad", "default_constants_path", "memory_MiB",
           "neighbours_per_point", "network_macs", "plan", "rank_load", "read_constants",
           "smallest_ranks", "time_s", "write_constants"]
