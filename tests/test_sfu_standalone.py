"""`arbiter/sfu/` runs without the gateway, the rooms, the store or the web (issue 12): an SFU
worker process imports the media plane and nothing of the signaling server."""

from __future__ import annotations

import json
import subprocess
import sys

ALLOWED = {"arbiter", "arbiter.config", "arbiter.errors"}


def test_the_sfu_imports_nothing_of_the_gateway() -> None:
    code = (
        "import json, sys\n"
        "import arbiter.sfu.endpoint, arbiter.sfu.media, arbiter.sfu.room\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('arbiter', 'sqlite'))"
        " or m in ('quart', 'hypercorn', 'aiortc', 'av'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    outside = {m for m in loaded if not m.startswith("arbiter.sfu") and m not in ALLOWED}
    assert outside == set(), outside
