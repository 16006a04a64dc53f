"""Fuzz every `*_untrusted` parser of the media plane and `MediaEndpoint.dispatch`.

Each target is fed (1) structure-aware mutations of recorded valid inputs (Chrome's STUN checks
from tests/data/stun_chrome.json, the recorded Chrome and aiortc offers, RTP and RTCP built with
arbiter.sfu.rtp/rtcp builders over recorded media payloads, DTLS records from an in-memory
handshake, SRTP protected with real keys) and (2) hypothesis-generated inputs. The contract
under test (arbiter/errors.py): a parser raises `MalformedInput` or returns, nothing else;
`dispatch` never raises and never reaches its `internal_error` safety net.

Mutations that only break a checksum stop at the checksum, so the STUN and SRTP mutators also
re-sign their output (MESSAGE-INTEGRITY + FINGERPRINT with the right password; SRTP protect with
the right keys) so that hostile content reaches the code behind the authentication check: an
authenticated peer is still an untrusted one.

The harness, targets and corpus live in arbiter/testing/ (fuzz.py, fuzz_dispatch.py,
fuzz_corpus.py), shared with tests/test_fuzz_parsers.py.

Usage: .venv/bin/python scripts/fuzz_parsers.py [--inputs 100000] [--hypothesis 5000]
       [--seed 1] [--only NAME] [--json out.json]
Exit status 1 if any target raised anything but MalformedInput; the first input of each
exception type is printed (hex) so it can become a regression test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from arbiter.testing import fuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000,
                        help="inputs per parser (mutations + hypothesis)")
    parser.add_argument("--hypothesis", type=int, default=5_000,
                        help="of those, hypothesis-generated examples per parser")
    parser.add_argument("--dispatch", type=int, default=100_000, help="MediaEndpoint.dispatch inputs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default="", help="run the targets whose name contains this")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    results: list[fuzz.Result] = []
    for target in fuzz.build_targets():
        if args.only and args.only not in target.name:
            continue
        hyp = min(args.hypothesis, args.inputs)
        result = fuzz.run_target(target, args.inputs - hyp, hyp, args.seed)
        print(fuzz.summary_line(result), flush=True)
        results.append(result)
    if args.dispatch and (not args.only or args.only in "endpoint.dispatch"):
        from arbiter.testing import fuzz_dispatch  # a live endpoint: loaded only when needed

        result = fuzz_dispatch.run(args.dispatch, args.seed)
        print(fuzz.summary_line(result), flush=True)
        results.append(result)
    bad = [r for r in results if not r.ok]
    for r in bad:
        for name, shown in r.first_input.items():
            if name != "MalformedInput":
                print(f"CRASH {r.name} {name}: {shown}")
    total_inputs = sum(r.inputs for r in results)
    total_time = sum(r.elapsed for r in results)
    print(f"total: {total_inputs} inputs in {total_time:.1f} s; "
          f"{len(bad)} target(s) raised something other than MalformedInput")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps([fuzz.as_json(r) for r in results], indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
