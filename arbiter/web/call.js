// The media side of one join (docs/PROTOCOL.md section 4): one producer RTCPeerConnection
// carrying our microphone and camera to the room's SFU, one consumer RTCPeerConnection per remote
// participant (the SFU offers, we answer), and getStats() for decode counters and quality.
//
// Camera video goes out as three simulcast encodings (simulcast.js); `layers` frames from the
// SFU and screen sharing turn them on and off with setParameters, never by renegotiating.
//
// The SFU is ICE-lite and puts its candidate in the SDP, so candidate frames are ignored and
// ours are not sent. Chat and features go over the WebSocket, never over data channels.

import { activeRids, addVideoTransceiver, planEncodings, RIDS } from "./simulcast.js";

/**
 * What the call tells its owner (join.js).
 *
 * @typedef {object} CallEvents
 * @property {(peerId: string, track: MediaStreamTrack) => void} [onTrack]
 * @property {(peerId: string, state: RTCPeerConnectionState) => void} [onConsumerState]
 * @property {(state: RTCPeerConnectionState) => void} [onProducerState]
 * @property {(message: string) => void} [onError]
 */

/**
 * A handshake frame from the SFU (docs/PROTOCOL.md section 4); untrusted.
 *
 * @typedef {{type?: unknown, remotePeerId?: unknown, description?: unknown, error?: any, candidate?: unknown}} HandshakeFrame
 */

/**
 * One publisher's decode counters (one getStats pass), and with `quality` its loss and verdict.
 *
 * @typedef {object} RemoteStats
 * @property {number} framesDecoded
 * @property {number} videoPacketsReceived
 * @property {number} packetsReceived  audio
 * @property {number} totalSamplesReceived
 * @property {number} packetsLost
 * @property {number} allPackets
 * @property {number} jitter  seconds
 * @property {number} audioLevel
 * @property {number | null} rtt  seconds
 * @property {number} [frameWidth]
 * @property {number} [frameHeight]
 * @property {number} [loss]  0..1 since the previous tracked pass
 * @property {"good" | "fair" | "poor"} [quality]
 */

/**
 * @typedef {object} LayerStats
 * @property {boolean} active
 * @property {number | null} frameWidth
 * @property {number | null} frameHeight
 * @property {number} framesEncoded
 * @property {number} packetsSent
 */

/**
 * @typedef {object} ProducerStats
 * @property {{packetsSent: number}} audio
 * @property {{packetsSent: number, layers: Record<string, LayerStats>, frameWidth?: number, frameHeight?: number, framesEncoded?: number}} video
 */

export class Call {
  /**
   * @param {object} opts
   * @param {import("./signaling.js").Signaling} opts.signaling
   * @param {number} opts.roomId
   * @param {RTCIceServer[]} [opts.iceServers]  see setIceServers
   * @param {CallEvents} opts.events
   */
  constructor({ signaling, roomId, iceServers, events }) {
    this.signaling = signaling;
    this.roomId = roomId;
    this.iceServers = iceServers || [];
    this.events = events;
    /** @type {RTCPeerConnection | null} */
    this.producer = null;
    /** @type {RTCRtpSender | null} */
    this.audioSender = null;
    /** @type {RTCRtpSender | null} */
    this.videoSender = null;
    /** @type {RTCRtpTransceiver | null} the producer's video transceiver (its mid names it in `layers`) */
    this.videoTransceiver = null;
    /** @type {Set<string>} the rids somebody watches: all until the SFU says otherwise */
    this.layers = new Set(RIDS);
    /** @type {Promise<void>} in-order getParameters/setParameters on the video sender */
    this.senderQueue = Promise.resolve();
    this.producerAnswered = false;
    this.offerRetries = 0; // join.js: offers re-sent while the SFU was not there
    // Publisher ids are whatever the server relays (any string a peer chose): they key Maps
    // only, never plain objects, and nothing of ours shares a Map with them.
    /** @type {Map<string, RTCPeerConnection>} publisher id -> its consumer connection */
    this.consumers = new Map();
    /** @type {Map<string, {audio?: MediaStreamTrack, video?: MediaStreamTrack}>} the tracks handed to onTrack */
    this.shown = new Map();
    /** @type {Promise<void>} in-order handling of producer frames */
    this.producerQueue = Promise.resolve();
    /** @type {Map<string, Promise<void>>} publisher id -> promise chain (in-order handling) */
    this.queues = new Map();
    /** @type {Map<string, RemoteStats>} publisher id -> last stats snapshot (loss over an interval) */
    this.previous = new Map();
    this.closed = false;
  }

  /**
   * The ICE servers (with TURN credentials) for every peer connection created from now on.
   *
   * @param {RTCIceServer[]} iceServers
   */
  setIceServers(iceServers) {
    this.iceServers = iceServers || [];
  }

  /**
   * Offer our tracks to the SFU. `videoTrack` is the camera or a placeholder, never null.
   *
   * @param {MediaStreamTrack | null} audioTrack
   * @param {MediaStreamTrack} videoTrack
   */
  async publish(audioTrack, videoTrack) {
    const pc = (this.producer = new RTCPeerConnection({
      iceServers: this.iceServers,
      bundlePolicy: "max-bundle",
      rtcpMuxPolicy: "require",
    }));
    pc.onconnectionstatechange = () => {
      if (this.producer === pc) this.events.onProducerState?.(pc.connectionState);
    };
    const stream = new MediaStream(audioTrack ? [audioTrack, videoTrack] : [videoTrack]);
    if (audioTrack) this.audioSender = pc.addTrack(audioTrack, stream);
    if (videoTrack) {
      this.videoTransceiver = addVideoTransceiver(pc, videoTrack, stream);
      this.videoSender = this.videoTransceiver.sender;
      this.configureVideo();
    }
    await pc.setLocalDescription(await pc.createOffer());
    if (this.closed) return;
    this.sendOffer();
  }

  /**
   * (Re)send the producer offer; true while it is still waiting for the SFU's answer.
   *
   * @returns {boolean}
   */
  sendOffer() {
    const pc = this.producer;
    const local = pc?.localDescription;
    if (this.closed || !pc || !local || this.producerAnswered || pc.signalingState !== "have-local-offer") {
      return false;
    }
    return this.signaling.send("handshake", {
      type: "producer",
      roomId: this.roomId,
      description: { type: local.type, sdp: local.sdp },
    });
  }

  /**
   * Swap the outgoing video (screen share and back) without renegotiating. A screen (a track
   * with contentHint "detail") goes out as the full encoding alone, a camera as the encodings
   * the last `layers` frame asked for.
   *
   * @param {MediaStreamTrack} track
   * @returns {Promise<boolean>}
   */
  async replaceVideo(track) {
    if (!this.videoSender) return false;
    await this.videoSender.replaceTrack(track);
    await this.configureVideo();
    return true;
  }

  /**
   * A `layers` frame from the SFU: the rids of our video transceiver `mid` that somebody
   * watches; the others stop being encoded. Frames for another mid, or without a list, are
   * ignored.
   *
   * @param {{mid?: unknown, active?: unknown}} msg
   * @returns {Promise<void>}
   */
  setLayers(msg) {
    const active = activeRids(msg.active);
    const mid = this.videoTransceiver?.mid;
    if (active === null || mid == null || msg.mid !== mid) return Promise.resolve();
    this.layers = active;
    return this.configureVideo();
  }

  /**
   * Apply the encodings (simulcast.js `planEncodings`) and the degradation preference for the
   * sender's current track; queued, so that one getParameters/setParameters pair never
   * overlaps another (setParameters refuses a stale transaction).
   *
   * @returns {Promise<void>}
   */
  configureVideo() {
    const sender = this.videoSender;
    const next = this.senderQueue.then(async () => {
      if (this.closed || !sender || typeof sender.getParameters !== "function") return;
      const track = sender.track;
      const params = sender.getParameters();
      if (!params.encodings?.length) return; // Firefox before negotiation: nothing to set yet
      planEncodings(params.encodings, {
        sharing: track?.contentHint === "detail",
        active: this.layers,
        trackHeight: track?.getSettings?.().height || 0,
      });
      // Screen content keeps its resolution under pressure; camera video keeps its frame rate.
      params.degradationPreference =
        track?.contentHint === "detail" ? "maintain-resolution" : "balanced";
      try {
        await sender.setParameters(params);
      } catch (err) {
        if (/** @type {{name?: string}} */ (err)?.name !== "InvalidStateError") throw err; // closed meanwhile
      }
    });
    this.senderQueue = next.catch((err) => this.events.onError?.(`video encodings: ${err?.message || err}`));
    return this.senderQueue;
  }

  /**
   * The video sender's encodings as the browser has them now (the test hook reads them).
   *
   * @returns {Promise<Array<{rid: string | null, active: boolean, scaleResolutionDownBy: number | null, maxBitrate: number | null}>>}
   */
  async encodings() {
    await this.senderQueue;
    const params = this.videoSender?.getParameters?.();
    return (params?.encodings || []).map((e) => ({
      rid: e.rid ?? null,
      active: e.active !== false,
      scaleResolutionDownBy: e.scaleResolutionDownBy ?? null,
      maxBitrate: e.maxBitrate ?? null,
    }));
  }

  /**
   * A handshake frame from the SFU (producer answer or consumer offer).
   *
   * @param {HandshakeFrame} msg
   * @returns {Promise<void>}
   */
  handle(msg) {
    const publisher = msg.type === "consumer" ? publisherId(msg.remotePeerId) : null;
    if (msg.type === "consumer" && publisher === null) return Promise.resolve();
    const prev = publisher === null ? this.producerQueue : this.queues.get(publisher) || Promise.resolve();
    const next = prev
      .then(() => this.handleNow(msg, publisher))
      .catch((err) => this.events.onError?.(`${msg.type}: ${err?.message || err}`));
    if (publisher === null) this.producerQueue = next;
    else this.queues.set(publisher, next);
    return next;
  }

  /**
   * @param {HandshakeFrame} msg
   * @param {string | null} publisher  null for the producer's frames
   */
  async handleNow(msg, publisher) {
    if (this.closed) return;
    if (msg.error && typeof msg.error === "object") {
      this.events.onError?.(`The media server refused our ${msg.type} connection: ${msg.error.message}`);
      return;
    }
    if ("candidate" in msg) return; // ICE-lite: the SFU's candidate is in its SDP
    const description = /** @type {RTCSessionDescriptionInit} */ (msg.description);
    if (!description || typeof description !== "object") return;
    if (msg.type === "producer" && description.type === "answer" && this.producer) {
      if (this.producer.signalingState !== "have-local-offer") return;
      await this.producer.setRemoteDescription(description);
      this.producerAnswered = true;
      // An answer without a=simulcast left the browser one encoding (the quarter one): size it.
      await this.configureVideo();
    } else if (msg.type === "consumer" && description.type === "offer" && publisher !== null) {
      await this.answerConsumer(publisher, description);
    }
  }

  /**
   * @param {string} publisher
   * @param {RTCSessionDescriptionInit} description  the SFU's offer
   */
  async answerConsumer(publisher, description) {
    const current = this.consumers.get(publisher);
    if (current && current.signalingState !== "closed") {
      // A re-offer on the connection we have (the publisher added or stopped a track, or the
      // SFU restarts ICE): renegotiate it, never rebuild it (docs/PROTOCOL.md section 4).
      await current.setRemoteDescription(description);
      await current.setLocalDescription(await current.createAnswer());
      if (this.closed || this.consumers.get(publisher) !== current) return;
      this.sendAnswer(publisher, current);
      this.showActiveTracks(publisher, current);
      return;
    }
    current?.close();
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle" });
    this.consumers.set(publisher, pc);
    this.shown.delete(publisher);
    this.previous.delete(publisher);
    pc.onconnectionstatechange = () => {
      if (this.consumers.get(publisher) === pc) {
        this.events.onConsumerState?.(publisher, pc.connectionState);
      }
    };
    pc.ontrack = () => {
      if (this.consumers.get(publisher) === pc) this.showActiveTracks(publisher, pc);
    };
    await pc.setRemoteDescription(description);
    await pc.setLocalDescription(await pc.createAnswer());
    if (this.closed || this.consumers.get(publisher) !== pc) return;
    this.sendAnswer(publisher, pc);
    this.events.onConsumerState?.(publisher, pc.connectionState);
  }

  /**
   * @param {string} publisher
   * @param {RTCPeerConnection} pc
   */
  sendAnswer(publisher, pc) {
    const local = pc.localDescription;
    if (!local) return;
    this.signaling.send("handshake", {
      type: "consumer",
      remotePeerId: publisher,
      roomId: this.roomId,
      description: { type: local.type, sdp: local.sdp },
    });
  }

  /**
   * Hand the tile the publisher's first live track of each kind. A renegotiation may add a
   * track (a second camera: the tile keeps the first) or turn one inactive (the tile falls
   * back to the next live one).
   *
   * @param {string} publisher
   * @param {RTCPeerConnection} pc
   */
  showActiveTracks(publisher, pc) {
    const shown = this.shown.get(publisher) || {};
    for (const kind of /** @type {const} */ (["audio", "video"])) {
      const live = pc.getTransceivers().find(
        (t) => t.receiver.track.kind === kind && !(/** @type {{stopped?: boolean}} */ (t).stopped) &&
          t.currentDirection !== "inactive" && t.currentDirection !== "stopped",
      );
      const track = live?.receiver.track;
      if (track && shown[kind] !== track) {
        shown[kind] = track;
        this.events.onTrack?.(publisher, track);
      }
    }
    this.shown.set(publisher, shown);
  }

  /** @param {string} publisher */
  closeConsumer(publisher) {
    this.consumers.get(publisher)?.close();
    this.consumers.delete(publisher);
    this.shown.delete(publisher);
    this.previous.delete(publisher);
    this.queues.delete(publisher);
  }

  close() {
    this.closed = true;
    for (const pc of this.consumers.values()) pc.close();
    this.consumers.clear();
    this.producer?.close();
    this.producer = null;
  }

  /**
   * Per-remote decode counters from one getStats() pass; with `track`, also a good/fair/poor
   * quality against the previous tracked pass (the once-a-second loop in peers.js).
   *
   * @param {{track?: boolean}} [opts]
   * @returns {Promise<{remote: Record<string, RemoteStats>, producer: ProducerStats, producerState: RTCPeerConnectionState}>}
   */
  async stats({ track = true } = {}) {
    /** @type {Map<string, RemoteStats>} */
    const remote = new Map();
    await Promise.all(
      [...this.consumers].map(async ([publisher, pc]) => {
        try {
          const now = summarise(await pc.getStats());
          remote.set(publisher, track ? this.quality(publisher, now) : now);
        } catch {
          // closed meanwhile
        }
      }),
    );
    /** @type {ProducerStats} */
    const producer = { audio: { packetsSent: 0 }, video: { packetsSent: 0, layers: {} } };
    if (this.producer) {
      try {
        (await this.producer.getStats()).forEach((s) => {
          if (s.type !== "outbound-rtp" || (s.kind !== "audio" && s.kind !== "video")) return;
          producer[/** @type {"audio" | "video"} */ (s.kind)].packetsSent += s.packetsSent || 0;
          if (s.kind !== "video") return;
          // One outbound-rtp per simulcast encoding (rid), turned-off ones included: the
          // largest picture going out stands for the video; each rid is listed too.
          /** @type {LayerStats} */
          const layer = {
            active: s.active !== false,
            frameWidth: s.frameWidth ?? null,
            frameHeight: s.frameHeight ?? null,
            framesEncoded: s.framesEncoded || 0,
            packetsSent: s.packetsSent || 0,
          };
          if (s.rid) producer.video.layers[s.rid] = layer;
          if (layer.active && (layer.frameHeight || 0) >= (producer.video.frameHeight || 0)) {
            producer.video.frameWidth = s.frameWidth;
            producer.video.frameHeight = s.frameHeight;
            producer.video.framesEncoded = s.framesEncoded;
          }
        });
      } catch {
        // closed meanwhile
      }
    }
    return {
      // fromEntries defines own properties: a publisher called "__proto__" stays a plain key.
      remote: Object.fromEntries(remote),
      producer,
      producerState: this.producer?.connectionState || "closed",
    };
  }

  /**
   * @param {string} publisher
   * @param {RemoteStats} now  this pass's counters
   * @returns {RemoteStats}
   */
  quality(publisher, now) {
    const before = this.previous.get(publisher);
    this.previous.set(publisher, now);
    let loss = 0;
    let flowing = true;
    if (before) {
      const lost = Math.max(0, now.packetsLost - before.packetsLost);
      const got = Math.max(0, now.allPackets - before.allPackets);
      loss = lost + got > 0 ? lost / (lost + got) : 0;
      flowing = got > 0;
    }
    const jitterMs = (now.jitter || 0) * 1000;
    const rttMs = now.rtt == null ? null : now.rtt * 1000;
    /** @type {"good" | "fair" | "poor"} */
    let quality = "good";
    if (!flowing || loss > 0.08 || jitterMs > 100 || (rttMs ?? 0) > 500) quality = "poor";
    else if (loss > 0.02 || jitterMs > 30 || (rttMs ?? 0) > 250) quality = "fair";
    return { ...now, loss, quality };
  }
}

/**
 * A consumer frame's remotePeerId as a Map key, or null when there is none.
 *
 * @param {unknown} value
 * @returns {string | null}
 */
function publisherId(value) {
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  return typeof value === "string" && value !== "" ? value : null;
}

/**
 * @param {RTCStatsReport} report  a consumer connection's
 * @returns {RemoteStats}
 */
function summarise(report) {
  /** @type {RemoteStats} */
  const out = {
    framesDecoded: 0,
    videoPacketsReceived: 0,
    packetsReceived: 0, // audio
    totalSamplesReceived: 0,
    packetsLost: 0,
    allPackets: 0,
    jitter: 0,
    audioLevel: 0,
    rtt: null,
  };
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      out.packetsLost += s.packetsLost || 0;
      out.allPackets += s.packetsReceived || 0;
      out.jitter = Math.max(out.jitter, s.jitter || 0);
      if (s.kind === "video") {
        out.framesDecoded += s.framesDecoded || 0;
        out.videoPacketsReceived += s.packetsReceived || 0;
        if (s.frameWidth) out.frameWidth = s.frameWidth;
        if (s.frameHeight) out.frameHeight = s.frameHeight;
      } else if (s.kind === "audio") {
        out.packetsReceived += s.packetsReceived || 0;
        out.totalSamplesReceived += s.totalSamplesReceived || 0;
        out.audioLevel = s.audioLevel || 0;
      }
    } else if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime != null) {
      out.rtt = s.currentRoundTripTime;
    } else if (s.type === "remote-outbound-rtp" && s.roundTripTime != null && out.rtt == null) {
      out.rtt = s.roundTripTime;
    }
  });
  return out;
}
