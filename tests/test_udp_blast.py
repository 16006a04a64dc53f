"""5,000 hostile datagrams at the media port during a live three-person call.

The call's streams lose nothing, no transport closes, and the endpoint's drop counters equal,
reason by reason, what RFC 7983 and the endpoint's rules predict for every datagram sent
(arbiter.testing.udp_blast; scripts/udp_blast.py runs the same with 100,000 and prints the
figures).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from arbiter.testing import udp_blast

pytestmark = pytest.mark.media


async def test_blast_during_call_loses_nothing_and_is_counted_by_reason(tmp_path: Path) -> None:
    report = await udp_blast.run(5_000, 3, 1, tmp_path)
    assert report["sent_by_category"] == {c: 500 for c in udp_blast.CATEGORIES}
    predicted = report["predicted_by_reason"]
    # Exact by construction for the categories whose fate does not depend on random bytes.
    assert predicted["stun_unknown_ufrag"] == 500  # every unknown-ufrag check
    assert predicted["srtp_auth"] == 500  # every forged packet from a participant's address
    assert predicted["unknown_address"] >= 500 + 500  # forged SRTP and replays from elsewhere
    assert predicted["oversize"] >= 500 and predicted["unknown_protocol"] >= 500
    assert sum(predicted.values()) == 5_000
    # What the endpoint counted is what was predicted, per reason.
    assert report["counted_by_reason"] == {r: predicted.get(r, 0) for r in udp_blast.BLAST_REASONS}
    assert "internal_error" not in report["other_counters"]
    # The call did not notice: same transports, nothing closed, no loss, no gap, no error.
    assert report["transports_before"] == report["transports_after"] == 3 + 3 * 2
    assert report["transports_closed"] == []
    assert report["participant_errors"] == [] and report["websocket_closes"] == []
    call = report["call"]
    assert call["packets_received"] > 0
    assert (call["packets_lost"], call["sequence_gaps"]) == (0, 0)
    assert call["latency_samples"] > 0
