"""Wall time of a command together with what the machine's host took meanwhile: on a virtual
machine the hypervisor's "steal" time (``/proc/stat``) slows every process without showing in
its CPU time, so a wall time alone does not say how long the command takes on the machine's
own cores. Prints the wall time, the command's CPU time (user + system, children included), and
the share of the machine's CPU time stolen during the run.

    python benchmarks/timed.py make demo
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path


def cpu_ticks() -> tuple[int, int]:
    """(total, steal) jiffies of all CPUs since boot, from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    total0, steal0 = cpu_ticks()
    start = time.perf_counter()
    code = subprocess.call(sys.argv[1:])
    wall = time.perf_counter() - start
    total1, steal1 = cpu_ticks()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    stolen = (steal1 - steal0) / max(total1 - total0, 1)
    print(f"timed: {' '.join(sys.argv[1:])}: wall {wall:.1f} s, CPU (user + system) "
          f"{usage.ru_utime + usage.ru_stime:.1f} s, host steal {100 * stolen:.0f} % of the "
          f"machine's CPU time during the run, exit {code}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
