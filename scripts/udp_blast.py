"""Blast the media port with hostile datagrams during a live call; the call must not notice.

A call of synthetic participants (real ICE, DTLS and SRTP) on an in-process server, while
`--datagrams` hostile datagrams of ten categories (random bytes, bad STUN, mutated DTLS, forged
SRTP, replays, oversize, empty, forgeries from the participants' own addresses) go to the media
port. Every datagram's fate is predicted from RFC 7983 and the endpoint's rules; the endpoint's
per-reason drop counters must equal the prediction and the call must lose nothing. The
categories, the prediction and the flow control are described in arbiter/testing/udp_blast.py,
shared with tests/test_udp_blast.py.

Usage: .venv/bin/python scripts/udp_blast.py [--datagrams 100000] [--participants 3]
       [--seed 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import trio

from arbiter.testing import udp_blast


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datagrams", type=int, default=100_000)
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="arbiter-blast-") as tmp:
        report = trio.run(udp_blast.run, args.datagrams, args.participants, args.seed, Path(tmp))
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    ok = (report["predicted_by_reason"] == {k: v for k, v in report["counted_by_reason"].items() if v}
          and report["call"]["packets_lost"] == 0 and not report["transports_closed"]
          and report["other_counters"].get("internal_error", 0) == 0)  # fmt: skip
    print("OK" if ok else "FAILED: see the figures above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
