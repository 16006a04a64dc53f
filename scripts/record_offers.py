"""Record real producer offers for the SDP tests: one from Chromium, one from aiortc.

Run once (the output is committed under tests/data/); rerun when a browser upgrade changes what
Chrome offers:

    .venv/bin/python scripts/record_offers.py [--out tests/data]

1. Chromium (Debian's /usr/bin/chromium through Playwright, headless, fake devices, on an empty
   page at http://localhost/ since about:blank has no mediaDevices): getUserMedia
   audio+video, both tracks on a new RTCPeerConnection plus the deployed client's two negotiated
   data channels ("chat" id 100, "features" id 110), createOffer + setLocalDescription, wait for
   ICE gathering to complete (bounded), save `localDescription.sdp` to chrome_offer.sdp.
2. aiortc with its synthetic AudioStreamTrack/VideoStreamTrack, same shape (aiortc gathers
   before setLocalDescription returns), saved to aiortc_offer.sdp.
3. Chromium's re-offers on one producer connection (issue 11), each answered by the SFU's own
   `build_producer_answer` as the room would: the first offer, the same offer again
   (`identical`), after `addTrack` of a second video track (`added`), after `removeTrack` of it
   (`removed`) and after `restartIce()` (`restart`); saved to chrome_reoffers.json as
   `[{"step": ..., "offer": sdp}, ...]`. Rerun one part alone with `--only reoffers`.

Candidates in the recordings are harmless: the SFU is ICE-lite and learns addresses from STUN.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ORIGIN = "http://localhost/"
CHROME_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]

OFFER_JS = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  pc.createDataChannel("chat", {negotiated: true, id: 100});
  pc.createDataChannel("features", {negotiated: true, id: 110});
  await pc.setLocalDescription(await pc.createOffer());
  // Bounded wait: without network interfaces gathering can take long, and candidates are optional.
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
    setTimeout(resolve, 3000);
  });
  const sdp = pc.localDescription.sdp;
  pc.close();
  for (const track of stream.getTracks()) track.stop();
  return sdp;
}
"""


def open_secure_page(page: Page) -> None:
    """Load an empty page at http://localhost/: about:blank is not a secure context, so it has no
    navigator.mediaDevices. Playwright answers the request itself; no server is involved."""
    page.route(
        ORIGIN, lambda route: route.fulfill(body="<!doctype html>", content_type="text/html")
    )
    page.goto(ORIGIN)


def record_chrome() -> str:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
        try:
            page = browser.new_page()
            open_secure_page(page)
            sdp = page.evaluate(OFFER_JS)
        finally:
            browser.close()
    assert isinstance(sdp, str)
    return sdp


async def _aiortc_offer() -> str:
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

    pc = RTCPeerConnection()
    try:
        pc.addTrack(AudioStreamTrack())
        pc.addTrack(VideoStreamTrack())
        pc.createDataChannel("chat", negotiated=True, id=100)
        pc.createDataChannel("features", negotiated=True, id=110)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def record_aiortc() -> str:
    return asyncio.run(_aiortc_offer())


REOFFER_JS = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  const pc = (window.pc = new RTCPeerConnection());
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  pc.createDataChannel("chat", {negotiated: true, id: 100});
  pc.createDataChannel("features", {negotiated: true, id: 110});
  window.offer = async () => {
    await pc.setLocalDescription(await pc.createOffer());
    return pc.localDescription.sdp;
  };
  window.answer = (sdp) => pc.setRemoteDescription({type: "answer", sdp});
  window.add = async () => {
    const extra = await navigator.mediaDevices.getUserMedia({video: true});
    window.extra = pc.addTrack(extra.getVideoTracks()[0], extra);
  };
  window.remove = () => pc.removeTrack(window.extra);
  window.restart = () => pc.restartIce();
}
"""


def record_chrome_reoffers() -> list[dict[str, str]]:
    from arbiter.sfu import sdp as arbiter_sdp

    local = arbiter_sdp.LocalParams(
        "sfuUfragSfuUfrag", "sfupasswordsfupasswordsfupasswo", ":".join(["AB"] * 32),
        [("127.0.0.1", 40000)],
    )  # fmt: skip
    steps: list[dict[str, str]] = []
    previous: dict[str, arbiter_sdp.Track] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
        try:
            page = browser.new_page()
            open_secure_page(page)
            page.evaluate(REOFFER_JS)
            for version, (step, action) in enumerate(
                (("initial", None), ("identical", None), ("added", "add()"),
                 ("removed", "remove()"), ("restart", "restart()")), 1,
            ):  # fmt: skip
                if action:
                    page.evaluate(f"window.{action}")
                offer = page.evaluate("window.offer()")
                answer, tracks = arbiter_sdp.build_producer_answer(
                    arbiter_sdp.parse_offer_untrusted(offer), local, session_id=1,
                    version=version, previous=previous,
                )  # fmt: skip
                previous = {t.mid: t for t in tracks}
                page.evaluate("(sdp) => window.answer(sdp)", answer)
                steps.append({"step": step, "offer": offer})
        finally:
            browser.close()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "tests/data")
    parser.add_argument("--only", choices=("offers", "reoffers"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only != "offers":
        steps = record_chrome_reoffers()
        (args.out / "chrome_reoffers.json").write_text(json.dumps(steps, indent=1) + "\n")
        print(f"wrote {args.out / 'chrome_reoffers.json'} ({len(steps)} offers)")
    if args.only == "reoffers":
        return
    for name, record in (("chrome_offer.sdp", record_chrome), ("aiortc_offer.sdp", record_aiortc)):
        sdp = record()
        # newline="" keeps SDP's CRLF line endings byte for byte.
        (args.out / name).write_text(sdp, newline="")
        print(f"wrote {args.out / name} ({len(sdp)} bytes)")


if __name__ == "__main__":
    main()
