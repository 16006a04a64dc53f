"""Profile the forwarding loop for BENCHMARKS.md: py-spy samples `scripts/bench_forward.py`
(the SFU process alone; sender and sink are its subprocesses and are not sampled) and the self
time of each leaf function is written as JSON, which `arbiter bench` prints as the profile
paragraph of the same run (issue 12: never fixed text).

Usage: python scripts/bench_profile.py --json benchmarks/profile.json [--seconds 5]
Needs py-spy (`pip install py-spy`); without it, writes nothing and exits 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

TOP = 6


def leaf_shares(raw: str) -> tuple[int, list[tuple[str, float]], float]:
    """py-spy's raw (collapsed) stacks -> (samples, [(leaf function, share)], arbiter share).

    A leaf is the innermost Python frame: a C call (sendto, libsrtp's protect) is charged to
    the Python function that made it. Only the trio thread counts (the forwarding loop): the
    worker thread that waits for the sender and sink subprocesses, and start-up imports, are
    left out."""
    leaves: Counter[str] = Counter()
    arbiter = 0
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if "trio/_core/_run.py" not in stack or "importlib" in stack:
            continue
        n = int(count)
        leaf = stack.rsplit(";", 1)[-1]
        name, _, where = leaf.partition(" (")
        module = where.split(":", 1)[0]
        leaves[f"{name} ({module})"] += n
        if "arbiter/" in where or where.startswith(("sfu/", "bench_forward")):
            arbiter += n
        total += n
    if not total:
        return 0, [], 0.0
    return total, [(k, v / total) for k, v in leaves.most_common(TOP)], arbiter / total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fanout", type=int, default=4)
    parser.add_argument("--rate", type=int, default=20000)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not found: no profile", file=sys.stderr)
        return 1
    forward = [sys.executable, "scripts/bench_forward.py", "--fanout", str(args.fanout),
               "--rate", str(args.rate), "--seconds", str(args.seconds)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw.txt"
        command = [spy, "record", "-r", "500", "-f", "raw", "-o", str(out), "--", *forward]
        subprocess.run(command, check=True, capture_output=True)
        samples, functions, arbiter = leaf_shares(out.read_text())
    result = {
        "command": f"py-spy record -r 500 -f raw -- python scripts/bench_forward.py --fanout "
                   f"{args.fanout} --rate {args.rate} --seconds {args.seconds:g}",
        "samples": samples,
        "functions": [{"name": name, "share": round(share, 4)} for name, share in functions],
        "arbiter_share": round(arbiter, 4),
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
