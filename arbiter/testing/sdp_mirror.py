"""The far side of an SDP the SFU wrote, in the shape a browser writes it (sans-IO tests).

`mirror(ours, ...)` turns one of the SFU's consumer descriptions into what a subscriber's
browser sends back for it: the same m-sections in the same order with the same payload types
and mids, `recvonly` for `sendonly`, the browser's own ICE credentials and certificate
fingerprint, a chosen `a=setup`, no `a=ice-lite`, no candidates, none of the SFU's SSRCs or msid.
With `setup="active"` it is an answer to a consumer offer; with `setup="actpass"` the offer a
browser makes when it renegotiates its consumer pc (e.g. after `restartIce()`).
"""

from __future__ import annotations

import re

DROPPED = ("a=ssrc", "a=msid:", "a=candidate", "a=end-of-candidates", "a=ice-lite")


def mirror(
    ours: str,
    *,
    setup: str,
    ufrag: str = "subU",
    pwd: str = "subscriberpasswordsubscriber",
    fingerprint: str = ":".join(["CD"] * 32),
) -> str:
    out = []
    for line in ours.split("\r\n")[:-1]:
        if line.startswith(DROPPED):
            continue
        line = re.sub(r"^a=ice-ufrag:.*", f"a=ice-ufrag:{ufrag}", line)
        line = re.sub(r"^a=ice-pwd:.*", f"a=ice-pwd:{pwd}", line)
        line = re.sub(r"^a=fingerprint:sha-256 .*", f"a=fingerprint:sha-256 {fingerprint}", line)
        line = re.sub(r"^a=setup:.*", f"a=setup:{setup}", line)
        out.append("a=recvonly" if line == "a=sendonly" else line)
    return "\r\n".join(out) + "\r\n"
