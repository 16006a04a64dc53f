"""MediaRoom renegotiation (issue 11; docs/PROTOCOL.md section 4), without sockets.

A MediaRoom with a recording signaling peer and a MediaEndpoint that is never started: the
producer offers are Chromium's recorded re-offers (tests/data/chrome_reoffers.json), consumer
answers are written in the shape a browser answers. What is checked is what the room sends and
which transports, Producers and Consumers exist afterwards. Real peers are in
tests/test_media_browser.py and tests/test_media_aiortc.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import trio

from arbiter.config import Config, MediaConfig
from arbiter.sfu import sdp
from arbiter.sfu.dtls import Certificate
from arbiter.sfu.endpoint import MediaEndpoint
from arbiter.sfu.media import MediaRoom
from arbiter.sfu.media_worker import MediaWorker
from arbiter.testing.sdp_mirror import mirror

DATA = Path(__file__).parent / "data"
# Recorded against a server that did not take transport-cc, so Chromium's re-offers no longer
# carry it (RFC 8285: a later offer keeps only what was negotiated); the first offer loses it
# too, so "identical" stays identical now that the SFU accepts transport-cc.
_TWCC_EXTMAP = re.compile(r"a=extmap:\d+ http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n")
STEPS = {
    s["step"]: _TWCC_EXTMAP.sub("", s["offer"])
    for s in json.loads((DATA / "chrome_reoffers.json").read_text())
}
CERT = Certificate.generate()
OTHER_FINGERPRINT = ":".join(["CD"] * 32)


class FakeSfu:
    """The signaling half as MediaRoom sees it: participants, send and notify, recorded."""

    def __init__(self, *participants: str) -> None:
        self.participants: dict[str, Any] = dict.fromkeys(participants)
        self.sent: list[dict[str, Any]] = []
        self.notices: list[tuple[str, dict[str, Any]]] = []

    async def send(self, action: str, data: dict[str, Any]) -> None:
        assert action == "handshake"
        self.sent.append(data)

    def notify(self, action: str, data: dict[str, Any]) -> None:
        self.notices.append((action, data))

    def take(self) -> list[dict[str, Any]]:
        out, self.sent = self.sent, []
        return out


def new_room(*participants: str) -> tuple[MediaRoom, FakeSfu, MediaEndpoint]:
    endpoint = MediaEndpoint(
        MediaConfig(listen="127.0.0.1", port=0, announced_ip=["127.0.0.1"]), CERT
    )
    endpoint.port = 40000  # never started: the port its SDP announces
    sfu = FakeSfu(*participants)
    room = MediaRoom(1, sfu, MediaWorker(endpoint), Config())  # type: ignore[arg-type]
    return room, sfu, endpoint


def ice_of(text: str) -> tuple[str, str, str]:
    """(ufrag, pwd, sha-256 fingerprint) of an SDP we wrote."""
    def first(name: str) -> str:
        match = re.search(rf"a={name}:(\S+(?: \S+)?)", text)
        assert match is not None, name
        return match[1]
    return first("ice-ufrag"), first("ice-pwd"), first("fingerprint")


def browser_answer(offer: str, ufrag: str = "subU", fingerprint: str = OTHER_FINGERPRINT) -> str:
    """A subscriber's answer to our consumer offer: recvonly, its credentials, setup:active."""
    return mirror(offer, setup="active", ufrag=ufrag, fingerprint=fingerprint)


def producer(text: str) -> dict[str, Any]:
    return {"type": "producer", "sender": "A", "description": {"type": "offer", "sdp": text}}


def consumer(sender: str, publisher: str, kind: str, text: str) -> dict[str, Any]:
    return {"type": "consumer", "sender": sender, "remotePeerId": publisher,
            "description": {"type": kind, "sdp": text}}  # fmt: skip


async def publish_and_subscribe() -> tuple[MediaRoom, FakeSfu, MediaEndpoint, str]:
    """A publishes (the recorded first offer); B gets a consumer offer and answers it."""
    room, sfu, endpoint = new_room("A", "B")
    await room.on_handshake(producer(STEPS["initial"]))
    answer, offer = sfu.take()
    assert answer["type"] == "producer" and "description" in answer
    assert offer["type"] == "consumer" and offer["receiver"] == "B"
    await room.on_handshake(consumer("B", "A", "answer", browser_answer(offer["description"]["sdp"])))
    assert sfu.take() == []
    return room, sfu, endpoint, answer["description"]["sdp"]


async def test_an_identical_reoffer_changes_nothing_but_the_version() -> None:
    room, sfu, endpoint, first = await publish_and_subscribe()
    publisher = room.publishers["A"]
    transport, producers = publisher.transport, dict(publisher.producers)
    subscription = room.subscriptions[("B", "A")]
    consumers = room.router.consumers_of(subscription.transport)
    for version in (2, 3, 4):
        await room.on_handshake(producer(STEPS["identical"]))
        (answer,) = sfu.take()  # the answer and nothing else: no consumer offer
        text = answer["description"]["sdp"]
        assert re.sub(r"o=- (\d+) \d+", r"o=- \1 N", text) == re.sub(
            r"o=- (\d+) \d+", r"o=- \1 N", first
        )
        assert f" {version} IN IP4" in text.split("\r\n")[1]
    assert room.publishers["A"].transport is transport and publisher.producers == producers
    assert room.subscriptions[("B", "A")] is subscription
    assert room.router.consumers_of(subscription.transport) == consumers
    assert room.transport_count() == 2 and endpoint.transport_count() == 2
    assert sfu.notices == []


async def test_added_and_removed_tracks_reoffer_on_the_same_consumer_connection() -> None:
    room, sfu, endpoint, first = await publish_and_subscribe()
    subscription = room.subscriptions[("B", "A")]
    sub_transport = subscription.transport
    kept = dict(room.publishers["A"].producers)
    await room.on_handshake(producer(STEPS["added"]))
    answer, reoffer = sfu.take()
    assert ice_of(answer["description"]["sdp"]) == ice_of(first)
    assert reoffer["type"] == "consumer" and reoffer["receiver"] == "B"
    assert reoffer["remotePeerId"] == "A"
    text = reoffer["description"]["sdp"]
    assert ice_of(text)[:2] == (sub_transport.ice.ufrag, sub_transport.ice.pwd)
    assert re.findall(r"a=mid:(\S+)", text) == ["0", "1", "3"]
    assert " 2 IN IP4" in text.split("\r\n")[1]  # the consumer connection's second offer
    publisher = room.publishers["A"]
    assert {m: publisher.producers[m] for m in ("0", "1")} == kept  # untouched
    new = publisher.producers["3"]
    assert room.router.consumers_of(sub_transport)[new.ssrc].producer is new
    assert room.transport_count() == 2
    await room.on_handshake(consumer("B", "A", "answer", browser_answer(text)))
    assert sfu.take() == [] and room.subscriptions[("B", "A")].transport is sub_transport
    # removeTrack: the section stays, inactive; its Producer and Consumer go.
    await room.on_handshake(producer(STEPS["removed"]))
    _, reoffer = sfu.take()
    text = reoffer["description"]["sdp"]
    assert re.findall(r"a=mid:(\S+)", text) == ["0", "1", "3"]
    assert text.split("m=video")[2].count("a=inactive") == 1
    assert new.closed and new.ssrc not in room.router.consumers_of(sub_transport)
    assert new.ssrc not in room.router.transports[publisher.transport].producers
    assert set(publisher.producers) == {"0", "1"}
    # The same removal offered again: nothing to re-offer.
    await room.on_handshake(producer(STEPS["removed"]))
    assert [m["type"] for m in sfu.take()] == ["producer"]


async def test_a_new_ice_ufrag_restarts_ice_on_the_same_transport() -> None:
    room, sfu, endpoint, first = await publish_and_subscribe()
    transport = room.publishers["A"].transport
    dtls = transport.dtls
    old_ufrag = transport.ice.ufrag
    await room.on_handshake(producer(STEPS["restart"]))
    (answer,) = sfu.take()  # no consumer offers: the tracks did not change
    ufrag, pwd, fingerprint = ice_of(answer["description"]["sdp"])
    assert fingerprint == ice_of(first)[2]
    assert (ufrag, pwd) == (transport.ice.ufrag, transport.ice.pwd) != ice_of(first)[:2]
    assert room.publishers["A"].transport is transport and transport.dtls is dtls
    assert endpoint.by_ufrag.get(ufrag) is transport and old_ufrag not in endpoint.by_ufrag
    remote = sdp.parse_offer_untrusted(STEPS["restart"]).remote
    assert transport.ice.remote_ufrag == remote.ice_ufrag
    assert room.transport_count() == 2


async def test_a_rebuilt_producer_connection_takes_over_without_eviction() -> None:
    room, sfu, endpoint, _ = await publish_and_subscribe()
    old = room.publishers["A"].transport
    sub_transport = room.subscriptions[("B", "A")].transport
    rebuilt = re.sub(r"a=fingerprint:sha-256 \S+", f"a=fingerprint:sha-256 {OTHER_FINGERPRINT}",
                     STEPS["restart"])  # fmt: skip
    await room.on_handshake(producer(rebuilt))
    (answer,) = sfu.take()  # same tracks (SSRCs): no consumer re-offer
    new = room.publishers["A"].transport
    assert new is not old and old.closed and old.close_reason == "replaced"
    assert sfu.notices == []  # nobody evicted
    assert ice_of(answer["description"]["sdp"])[0] == new.ice.ufrag
    assert room.subscriptions[("B", "A")].transport is sub_transport
    assert {c.producer for c in room.router.consumers_of(sub_transport).values()} == set(
        room.publishers["A"].producers.values()
    )
    assert all(p.transport is new for p in room.publishers["A"].producers.values())
    assert room.transport_count() == 2


async def test_a_rebuilt_consumer_connection_gets_a_transport_with_the_offered_credentials() -> None:
    room, sfu, endpoint, _ = await publish_and_subscribe()
    old = room.subscriptions[("B", "A")].transport
    await room.on_handshake(producer(STEPS["added"]))
    _, reoffer = sfu.take()
    text = reoffer["description"]["sdp"]
    # The subscriber closes its pc and answers from a new one (new ufrag and certificate).
    await room.on_handshake(consumer("B", "A", "answer", browser_answer(
        text, ufrag="newU", fingerprint=":".join(["EF"] * 32))))  # fmt: skip
    assert sfu.take() == []
    new = room.subscriptions[("B", "A")].transport
    assert new is not old and old.closed
    assert (new.ice.ufrag, new.ice.pwd) == ice_of(text)[:2]
    assert endpoint.by_ufrag[new.ice.ufrag] is new and new.ice.remote_ufrag == "newU"
    assert len(room.router.consumers_of(new)) == 5  # audio, video + rtx, the new video + rtx
    assert room.transport_count() == 2
    # An answer nobody asked for is refused.
    await room.on_handshake(consumer("B", "A", "answer", browser_answer(text)))
    (refused,) = sfu.take()
    assert refused["error"] == {"status": 400, "message": "No consumer offer pending"}


async def test_subscriber_offers_and_restart_requests_on_a_consumer_connection() -> None:
    room, sfu, endpoint, _ = await publish_and_subscribe()
    subscription = room.subscriptions[("B", "A")]
    transport = subscription.transport
    # The subscriber restarts ICE itself (its offer: new ufrag, same certificate).
    ours = ice_of(sdp.build_consumer_offer(subscription.sections, room._local(transport),
                                           session_id=1, version=1))  # fmt: skip
    offer = mirror(sdp.build_consumer_offer(subscription.sections, room._local(transport),
                                            session_id=1, version=1),
                   setup="actpass", ufrag="rstU", fingerprint=OTHER_FINGERPRINT)  # fmt: skip
    await room.on_handshake(consumer("B", "A", "offer", offer))
    (answer,) = sfu.take()
    assert answer["type"] == "consumer" and answer["description"]["type"] == "answer"
    text = answer["description"]["sdp"]
    assert ice_of(text)[:2] == (transport.ice.ufrag, transport.ice.pwd) != ours[:2]
    assert "a=setup:passive" in text and transport.ice.remote_ufrag == "rstU"
    assert room.subscriptions[("B", "A")].transport is transport
    # The subscriber asks the SFU to restart: a re-offer with new credentials.
    await room.on_handshake({"type": "consumer", "sender": "B", "remotePeerId": "A",
                             "restartIce": True})  # fmt: skip
    (reoffer,) = sfu.take()
    restarted = ice_of(reoffer["description"]["sdp"])
    assert restarted[:2] == (transport.ice.ufrag, transport.ice.pwd) != ice_of(text)[:2]
    assert endpoint.by_ufrag[transport.ice.ufrag] is transport
    # While that offer is out, a subscriber offer is glare: refused, the SFU's offer stands.
    await room.on_handshake(consumer("B", "A", "offer", offer))
    (refused,) = sfu.take()
    assert refused["error"]["message"] == "Consumer offer pending"
    await room.on_handshake(consumer("B", "A", "answer", browser_answer(
        reoffer["description"]["sdp"], ufrag="rs2U")))  # fmt: skip
    assert sfu.take() == [] and transport.ice.remote_ufrag == "rs2U"
    # Nothing to restart for a publisher B does not receive.
    await room.on_handshake({"type": "consumer", "sender": "B", "remotePeerId": "Z",
                             "restartIce": True})  # fmt: skip
    assert sfu.take()[0]["error"]["message"] == "No consumer connection"


async def test_a_refused_reoffer_leaves_the_connection_as_it_was() -> None:
    room, sfu, endpoint, _ = await publish_and_subscribe()
    publisher = room.publishers["A"]
    transport, producers = publisher.transport, dict(publisher.producers)
    await room.on_handshake(producer(STEPS["identical"].replace("a=rtcp-mux\r\n", "")))
    (refused,) = sfu.take()
    assert refused["type"] == "producer" and refused["error"]["status"] == 400
    assert publisher.transport is transport and publisher.producers == producers
    assert not transport.closed and room.transport_count() == 2
    with trio.fail_after(1):
        await room.on_handshake(producer(STEPS["identical"]))
    assert " 2 IN IP4" in sfu.take()[0]["description"]["sdp"].split("\r\n")[1]
