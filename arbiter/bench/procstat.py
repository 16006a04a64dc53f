"""CPU and memory of the measured server processes, from Linux's /proc accounting.

The benchmark's denominator is the SFU's own CPU time (utime + stime of the process and its
threads, `proc(5)`), never the load generator's, so a slow generator cannot flatter or hurt
the server's figure; the generator's CPU is reported next to it so saturation is visible.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from ..process import die_with_parent

_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 20.0  # seconds a server under test may take to say it is ready


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


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it (Linux's /proc/<pid>/task/<tid>/children)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                pass
    return out


def total(pids: Sequence[int]) -> Sample:
    """CPU and RSS summed over `pids` and all their child processes (a server with worker
    processes is measured whole)."""
    cpu, rss = 0.0, 0
    for root in pids:
        for pid in descendants(root):
            try:
                s = sample(pid)
            except (OSError, IndexError):
                continue  # exited between the listing and the read
            cpu += s.cpu_s
            rss += s.rss_kib
    return Sample(cpu, rss)


def self_cpu() -> float:
    return sample(os.getpid()).cpu_s


@asynccontextmanager
async def server_process(
    command: Sequence[str],
    *,
    ready: bytes,
    cpu: int | str | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """Run a server under test: yields (process, the first stdout line containing `ready`).

    `cpu` pins it to a core (or a list such as "0,1") with taskset (which execs the command:
    the pid is the server's). On exit it is terminated, then killed, shielded so cancellation
    cannot leave it running.

    Spawned from the calling (trio) thread, not from one of trio's worker threads as
    `trio.lowlevel.open_process` does: Linux sends PR_SET_PDEATHSIG when the *thread* that
    forked the child exits, and an idle worker thread exits after seconds, which killed a
    server left idle while the interleaved benchmark measured another target.
    """
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    process = subprocess.Popen(  # noqa: ASYNC220 - fork+exec, milliseconds; see above
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        preexec_fn=die_with_parent,
    )
    try:
        assert process.stdout is not None
        stdout = trio.lowlevel.FdStream(os.dup(process.stdout.fileno()))
        buffer = b""
        with trio.fail_after(START_TIMEOUT):
            while True:
                lines = buffer.split(b"\n")
                found = next((x for x in lines[:-1] if ready in x), None)
                if found is not None:
                    break
                chunk = await stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"{command[0]} exited before printing {ready!r}")
                buffer += chunk
        yield process, found.decode().strip()
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(5):
                while process.poll() is None:  # noqa: ASYNC110 - a Popen has no event
                    await trio.sleep(0.05)
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def spawn_serve(config: Path) -> tuple[subprocess.Popen[str], str]:
    """`arbiter serve --config config` as a child process (for synchronous measurement
    scripts): returns the process and the URL it printed. Kills it if it never says so."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "arbiter.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Arbiter listening on "):
            return proc, line.split()[-1].strip()
    proc.kill()
    raise RuntimeError("arbiter serve exited before printing its URL")
