"""Record the STUN Binding requests Chromium sends to an ICE-lite peer, for tests/test_stun_ice.py.

Run once (the output is committed); rerun when a browser upgrade changes Chrome's checks:

    .venv/bin/python scripts/record_chrome_stun.py [--out tests/data/stun_chrome.json]

A Python UDP socket on 127.0.0.1 plays the SFU: it answers every authenticated request with
IceLiteResponder (so Chrome validates the pair and then nominates it with USE-CANDIDATE) and
records every STUN datagram it receives. Chromium (Debian's /usr/bin/chromium via Playwright,
headless) creates an RTCPeerConnection with a data channel, offers, and gets a hand-written
answer with `a=ice-lite`, our ufrag/pwd, a dummy sha-256 fingerprint, `a=setup:passive` and one
host candidate: the socket. DTLS never completes (nobody answers the ClientHello); the ICE
exchange before it is all we want.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from arbiter.errors import MalformedInput
from arbiter.sfu.ice import IceLiteResponder
from arbiter.sfu.stun import is_stun, parse_binding_request_untrusted

CHROMIUM = "/usr/bin/chromium"
ORIGIN = "http://localhost/"
CHROME_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
# Fixed credentials so the recording documents what it was made with (ice-chars, RFC 8445 5.3).
LOCAL_UFRAG = "ArbiterRecUfrag1"
LOCAL_PWD = "ArbiterRecordingPassword+0123/45"
# Any well-formed value: Chrome only checks it once DTLS completes, which it never does here.
FINGERPRINT = ":".join(["AB"] * 32)

OFFER_JS = """
async (answerTemplate) => {
  const pc = new RTCPeerConnection();
  window._pc = pc;
  pc.createDataChannel("probe");
  await pc.setLocalDescription(await pc.createOffer());
  const sdp = pc.localDescription.sdp;
  const line = (name) => (sdp.match(new RegExp("a=" + name + ":(.*)")) || [])[1].trim();
  const mid = line("mid");
  const answer = answerTemplate.replaceAll("{mid}", mid);
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  return {ufrag: line("ice-ufrag"), pwd: line("ice-pwd"), offer: sdp, answer: answer};
}
"""

STATE_JS = "() => [window._pc.iceConnectionState, window._pc.connectionState]"


def answer_sdp(ip: str, port: int) -> str:
    """The SFU's answer, ICE-lite with one host candidate (RFC 8839 sections 5.1, 5.3, 5.4)."""
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=ice-lite",
        "a=group:BUNDLE {mid}",
        "a=msid-semantic: WMS",
        f"m=application {port} UDP/DTLS/SCTP webrtc-datachannel",
        f"c=IN IP4 {ip}",
        "a=mid:{mid}",
        f"a=ice-ufrag:{LOCAL_UFRAG}",
        f"a=ice-pwd:{LOCAL_PWD}",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=setup:passive",
        "a=sctp-port:5000",
        f"a=candidate:1 1 udp 2130706431 {ip} {port} typ host",
        "a=end-of-candidates",
    ]
    return "\r\n".join(lines) + "\r\n"


def serve(
    sock: socket.socket,
    responder: IceLiteResponder,
    stop: threading.Event,
    recorded: list[dict[str, Any]],
) -> None:
    """Answer and record STUN until `stop`; DTLS and anything else is ignored."""
    start = time.monotonic()
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(2048)
        except TimeoutError:
            continue
        if not is_stun(data):
            continue
        entry: dict[str, Any] = {"hex": data.hex(), "from": list(addr[:2])}
        try:
            request = parse_binding_request_untrusted(data, LOCAL_PWD)
            response, changed = responder.handle_request_untrusted(
                data, addr, time.monotonic() - start
            )
        except MalformedInput as exc:
            entry["error"] = exc.message
        else:
            sock.sendto(response, addr)
            entry.update(
                use_candidate=request.use_candidate,
                controlling=request.controlling,
                priority=request.priority,
                selected_changed=changed,
            )
        recorded.append(entry)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/data/stun_chrome.json"))
    parser.add_argument("--ip", default="127.0.0.1", help="address of the SFU's host candidate")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long to record")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.ip, 0))
    port = sock.getsockname()[1]
    responder = IceLiteResponder(ufrag=LOCAL_UFRAG, pwd=LOCAL_PWD)
    recorded: list[dict[str, Any]] = []
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(sock, responder, stop, recorded))
    thread.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
            try:
                page = browser.new_page()
                page.route(
                    ORIGIN,
                    lambda route: route.fulfill(body="<!doctype html>", content_type="text/html"),
                )
                page.goto(ORIGIN)
                version = browser.version
                remote = page.evaluate(OFFER_JS, answer_sdp(args.ip, port))
                responder.set_remote(remote["ufrag"], remote["pwd"])
                time.sleep(args.seconds)
                states = page.evaluate(STATE_JS)
            finally:
                browser.close()
    finally:
        stop.set()
        thread.join()
        sock.close()

    result = {
        "comment": "STUN Binding requests recorded from Chromium by scripts/record_chrome_stun.py",
        "browser": f"chromium {version}",
        "local_ufrag": LOCAL_UFRAG,
        "local_pwd": LOCAL_PWD,
        "remote_ufrag": remote["ufrag"],
        "remote_pwd": remote["pwd"],
        "server_addr": [args.ip, port],
        "ice_state_at_end": states,
        "requests": recorded,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    nominated = sum(1 for r in recorded if r.get("use_candidate"))
    print(f"{len(recorded)} STUN datagrams, {nominated} with USE-CANDIDATE, states {states}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
