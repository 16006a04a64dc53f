"""CPU and memory of the measured server processes, from Linux's /proc accounting.

The benchmark's denominator is the SFU's own CPU time (utime + stime of the process and its
threads, `proc(5)`), never the load generator's, so a slow generator cannot flatter or hurt
the server's figure; the generator's CPU is reported next to it so saturation is visible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    cpu_s: float  # user + system seconds since the process started
    rss_kib: int


def sample(pid: int) -> Sample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    # Fields 14 and 15 (utime, stime) counted from 1 with the comm field as 2; after splitting
    # off "pid (comm)" they are at indices 11 and 12.
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
            break
    return Sample(cpu, rss)


def self_cpu() -> float:
    return sample(os.getpid()).cpu_s
