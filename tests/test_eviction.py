"""A participant whose media stops without a goodbye is evicted after the consent timeout.

Consent freshness (RFC 7675): the SFU closes a transport that hears no valid STUN check for
`media.consent_timeout`. When that transport is a participant's producer, the SFU asks the
gateway to evict the participant: the room gets `clientDisconnect` and the silent client's
WebSocket is closed with 4001 (a browser still alive reconnects and joins again).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from arbiter.bench import engine
from arbiter.bench.arbiter_target import ArbiterTarget
from arbiter.bench.participant import join_call
from arbiter.gateway import CLOSE_MEDIA_LOST
from arbiter.sfu.dtls import Certificate
from arbiter.testing import make_config, new_room, running_server


async def test_silent_participant_is_evicted_after_consent_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Live legs check consent every 0.3 s, well inside the shortened 1.5 s timeout.
    monkeypatch.setattr(engine, "CONSENT_INTERVAL", 0.3)
    config = make_config(tmp_path, media={"consent_timeout": 1.5})
    certificate = Certificate.generate()
    async with running_server(config) as srv, trio.open_nursery() as nursery:
        room = await new_room(srv, "silent")
        target = ArbiterTarget()
        target.url = srv.url  # the in-process server under test
        with trio.fail_after(15):
            a, b = await join_call(target, room, [1, 2], certificate, nursery)
            endpoint = srv.server.endpoint
            assert endpoint is not None
            assert srv.server.media is not None
            assert srv.server.media.rooms[room].transport_count() == 4
            # A's network goes away: every leg falls silent, its WebSocket stays open.
            silent_at = trio.current_time()
            a.close_legs()
            while {"type": "clientDisconnect", "clientId": "p1"} not in b.messages:
                await trio.sleep(0.05)
            evicted_after = trio.current_time() - silent_at
            while a.close_code is None:
                await trio.sleep(0.05)
        assert a.close_code == CLOSE_MEDIA_LOST
        assert 1.5 <= evicted_after < 4.0  # consent timeout + one check interval (1 s) + slack
        assert endpoint.counters["consent_expired"] >= 1
        # B keeps its own producer; A's transports and B's consumer of A are gone.
        assert srv.server.media.rooms[room].transport_count() == 1
        assert set(srv.server.media.rooms[room].publishers) == {"p2"}
        assert b.close_code is None and b.errors == []
        b.close_legs()
        nursery.cancel_scope.cancel()
