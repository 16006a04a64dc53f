// Publishing camera video as three simulcast encodings (DESIGN section 4, "Quality"): rid `q`
// (quarter), `h` (half) and `f` (full resolution of the 1280x720 capture), lowest first as the
// `a=simulcast:send q;h;f` line lists them (RFC 8853 section 5.1; JSEP, RFC 8829 section 5.2.1).
// The SFU forwards one of them to each subscriber and tells us, in a `layers` frame, which ones
// somebody watches; the others are turned off with `setParameters` (active: false) so the
// browser does not encode them. A screen share is sent as the full encoding alone, so every
// subscriber can read it.
//
// A server that does not answer with `a=simulcast` (an older SFU) makes the browser keep only the
// first encoding (webrtc-pc, "set the session description", step "remove all but the first
// encoding"): that one is then sent at about 360 lines, like the client before simulcast.

/**
 * @typedef {object} LayerSpec
 * @property {string} rid
 * @property {number} scaleResolutionDownBy
 * @property {number} maxBitrate  bits per second
 */

/** @type {ReadonlyArray<Readonly<LayerSpec>>} lowest first */
export const LAYERS = Object.freeze([
  Object.freeze({ rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 }),
  Object.freeze({ rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 }),
  Object.freeze({ rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000 }),
]);

/** The rids we send, lowest first. */
export const RIDS = Object.freeze(LAYERS.map((l) => l.rid));

/** The rid a screen share keeps (the full-resolution one). */
export const SHARE_RID = "f";

/** Lines of video a single (non-simulcast) encoding aims at: what the client sent before. */
const SINGLE_TARGET_HEIGHT = 360;

/**
 * Add `track` to `pc` as a send-only video transceiver with the three simulcast encodings; a
 * browser that refuses `sendEncodings` gets a plain single-encoding transceiver instead.
 *
 * @param {RTCPeerConnection} pc
 * @param {MediaStreamTrack} track
 * @param {MediaStream} stream
 * @returns {RTCRtpTransceiver}
 */
export function addVideoTransceiver(pc, track, stream) {
  try {
    return pc.addTransceiver(track, {
      direction: "sendonly",
      streams: [stream],
      sendEncodings: LAYERS.map((l) => ({ ...l })),
    });
  } catch {
    return pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
  }
}

/**
 * @typedef {object} EncodingPlan
 * @property {boolean} sharing   the track is a screen share
 * @property {ReadonlySet<string>} active  the rids somebody watches (the last `layers` frame)
 * @property {number} trackHeight  the track's height in pixels, 0 when unknown
 */

/**
 * Set `encodings` (from `sender.getParameters()`, changed in place) for `plan`.
 * Several encodings: each one is on when its rid is watched (sharing: only `f`, at full
 * resolution). One encoding (simulcast refused, or unsupported): always on, about 360 lines for
 * a camera and the full resolution for a screen, with the browser's own bitrate ceiling.
 *
 * @param {RTCRtpEncodingParameters[]} encodings
 * @param {EncodingPlan} plan
 * @returns {RTCRtpEncodingParameters[]} `encodings`
 */
export function planEncodings(encodings, { sharing, active, trackHeight }) {
  if (encodings.length === 1) {
    const [only] = encodings;
    only.active = true;
    only.scaleResolutionDownBy = sharing
      ? 1
      : Math.max(1, (trackHeight || SINGLE_TARGET_HEIGHT) / SINGLE_TARGET_HEIGHT);
    delete only.maxBitrate;
    return encodings;
  }
  for (const encoding of encodings) {
    const spec = LAYERS.find((l) => l.rid === encoding.rid);
    if (!spec) continue; // not one of ours: leave it as the browser has it
    encoding.maxBitrate = spec.maxBitrate;
    encoding.scaleResolutionDownBy = spec.scaleResolutionDownBy;
    encoding.active = sharing ? spec.rid === SHARE_RID : active.has(spec.rid);
  }
  return encodings;
}

/**
 * The rids of an (untrusted) `layers` frame's `active` list that are ours, or null when it is
 * not a list.
 *
 * @param {unknown} value
 * @returns {Set<string> | null}
 */
export function activeRids(value) {
  if (!Array.isArray(value)) return null;
  return new Set(value.filter((rid) => typeof rid === "string" && RIDS.includes(rid)));
}
