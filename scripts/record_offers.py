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

Candidates in the recordings are harmless: the SFU is ICE-lite and learns addresses from STUN.
"""

from __future__ import annotations

import argparse
import asyncio
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "tests/data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, record in (("chrome_offer.sdp", record_chrome), ("aiortc_offer.sdp", record_aiortc)):
        sdp = record()
        # newline="" keeps SDP's CRLF line endings byte for byte.
        (args.out / name).write_text(sdp, newline="")
        print(f"wrote {args.out / name} ({len(sdp)} bytes)")


if __name__ == "__main__":
    main()
