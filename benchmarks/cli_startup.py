"""Start-up time and peak memory of the `fgvc` commands that need no model, against the cost of
importing torch (what every command paid before the CLI kept torch out), in one interleaved run.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 5]

Each command runs in a fresh interpreter; peak memory is the child's maximum resident set size
(``os.wait4``). Prints min and median seconds, peak MB, and the ratio of medians to
``import torch``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "fgvc --version": ["-m", "fgvc", "--version"],
    "fgvc --help": ["-m", "fgvc", "--help"],
    "fgvc run --help": ["-m", "fgvc", "run", "--help"],
    "fgvc datasets list": ["-m", "fgvc", "datasets", "list"],
    "fgvc resolution --train 224": ["-m", "fgvc", "resolution", "--train", "224"],
    "fgvc models list": ["-m", "fgvc", "models", "list"],
    "python -c 'import torch' (peer)": ["-c", "import torch"],
    "python -c pass (interpreter)": ["-c", "pass"],
}


def measure(args: list[str]) -> tuple[float, float]:
    """Seconds and peak resident MB of one run of ``python args``."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args} failed")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (default 5)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    peaks: dict[str, float] = dict.fromkeys(COMMANDS, 0.0)
    for _ in range(args.repeats):  # interleaved: machine load hits every command alike
        for name, argv in COMMANDS.items():
            seconds, peak = measure(argv)
            times[name].append(seconds)
            peaks[name] = max(peaks[name], peak)
    peer = statistics.median(times["python -c 'import torch' (peer)"])
    print("| command | min s | median s | peak MB | median / import torch |\n|---|---|---|---|---|")
    for name in COMMANDS:
        med = statistics.median(times[name])
        print(f"| {name} | {min(times[name]):.2f} | {med:.2f} | {peaks[name]:.0f} | "
              f"{med / peer:.2f} |")


if __name__ == "__main__":
    main()
