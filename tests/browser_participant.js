// A minimal Arbiter participant for the browser tests (tests/test_media_browser.py).
// Test harness only, not the product's web client. Injected into a page served from the
// Arbiter server's own origin; the test calls `await window.arbiterJoin(wsUrl, roomId, id, name)`
// and later `await window.stats()`, `window.arbiterState()`, `window.channelSend(label, text)`
// and `window.arbiterLeave()`. Renegotiation (issue 11): `window.harness.autoReoffer = true`
// re-offers on every negotiationneeded of the producer pc, as the deployed client does;
// `addVideo()`, `removeVideo()` and `restartIce()` change the producer pc, `restartConsumerIce(p)`
// offers on a consumer pc after restartIce(), `askConsumerRestart(p)` asks the SFU for new ICE
// credentials there. A consumer offer for a publisher we have a pc for is applied to that pc
// (JSEP renegotiation) unless `window.harness.rebuildConsumers` (close it, answer on a new one).
(() => {
  "use strict";

  const state = {
    id: null,
    roomId: null,
    ws: null,
    producer: null,
    consumers: new Map(), // remotePeerId -> RTCPeerConnection
    errors: [], // error frames, frames carrying an `error` object, harness failures
    frames: [], // every received frame's type, for diagnostics
    producerAnswered: false,
    producerAnswers: 0, // answers applied (the first offer's and every re-offer's)
    producerState: "new",
    consumerStates: {},
    media: {}, // remotePeerId -> {video: <video>, audio: <audio>}
    channels: {}, // label -> RTCDataChannel (the producer pc's)
    channelMessages: [], // [label, data] received, in order
    negotiationNeeded: 0, // the producer pc's negotiationneeded events
    producerOffers: 0, // producer offers sent (the first and every re-offer)
    answerUfrags: [], // the SFU's a=ice-ufrag in each producer answer
    consumerOffers: {}, // remotePeerId -> consumer offers received
    consumerAnswers: {}, // remotePeerId -> SFU answers to our consumer offers
    consumerPcs: {}, // remotePeerId -> consumer RTCPeerConnections created
    extraVideo: null, // the RTCRtpSender addVideo() added
  };
  const harness = (window.harness = { autoReoffer: false, rebuildConsumers: false });

  function send(action, data) {
    state.ws.send(JSON.stringify({ action, data }));
  }

  function fail(where, err) {
    state.errors.push({ type: "harness", where, message: String(err && err.stack || err) });
  }

  function mediaElements(publisher) {
    let entry = state.media[publisher];
    if (!entry) {
      const box = document.createElement("div");
      box.dataset.publisher = publisher;
      box.style.cssText = "display:inline-block;margin:4px;font:14px sans-serif";
      const label = document.createElement("div");
      label.textContent = publisher === "self" ? state.id + " (self)" : publisher;
      const video = document.createElement("video");
      video.autoplay = true;
      video.muted = true;
      video.playsInline = true;
      video.width = 320;
      video.height = 240;
      video.style.display = "block";
      const audio = document.createElement("audio");
      audio.autoplay = true;
      audio.muted = true;
      box.append(label, video, audio);
      document.body.append(box);
      entry = state.media[publisher] = { video, audio, box };
    }
    return entry;
  }

  function ufragOf(sdp) {
    const match = /a=ice-ufrag:(\S+)/.exec(sdp);
    return match ? match[1] : null;
  }

  async function answerOn(pc, publisher, description) {
    await pc.setRemoteDescription(description);
    await pc.setLocalDescription(await pc.createAnswer());
    const local = pc.localDescription;
    send("handshake", {
      type: "consumer",
      remotePeerId: publisher,
      roomId: state.roomId,
      description: { type: local.type, sdp: local.sdp },
    });
  }

  async function onConsumerOffer(publisher, description) {
    state.consumerOffers[publisher] = (state.consumerOffers[publisher] || 0) + 1;
    const current = state.consumers.get(publisher);
    if (current && !harness.rebuildConsumers && current.signalingState !== "closed") {
      // A re-offer on the connection we have: JSEP renegotiation on the same pc.
      await answerOn(current, publisher, description);
      return;
    }
    if (current) current.close();
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.consumerPcs[publisher] = (state.consumerPcs[publisher] || 0) + 1;
    state.consumers.set(publisher, pc);
    state.consumerStates[publisher] = pc.connectionState;
    pc.onconnectionstatechange = () => {
      if (state.consumers.get(publisher) === pc) {
        state.consumerStates[publisher] = pc.connectionState;
      }
    };
    pc.ontrack = (event) => {
      const elements = mediaElements(publisher);
      let element = event.track.kind === "video" ? elements.video : elements.audio;
      if (element.srcObject) {
        // A track added by a renegotiation: its own element, next to the first.
        element = document.createElement(event.track.kind);
        Object.assign(element, { autoplay: true, muted: true, width: 160, height: 120 });
        elements.box.append(element);
      }
      element.srcObject = new MediaStream([event.track]);
      element.play().catch((err) => fail("play " + event.track.kind, err));
    };
    await answerOn(pc, publisher, description);
  }

  async function onMessage(message) {
    state.frames.push(message.type);
    if (message.type === "error" || (message.error && typeof message.error === "object")) {
      state.errors.push(message);
      return;
    }
    if (message.type !== "producer" && message.type !== "consumer") return;
    if ("candidate" in message) return; // the SFU is ICE-lite: its candidate is in the SDP
    const description = message.description;
    if (!description || typeof description !== "object") return;
    if (message.type === "producer" && description.type === "answer") {
      await state.producer.setRemoteDescription(description);
      state.producerAnswered = true;
      state.producerAnswers += 1;
      state.answerUfrags.push(ufragOf(description.sdp));
    } else if (message.type === "consumer" && description.type === "offer") {
      await onConsumerOffer(message.remotePeerId, description);
    } else if (message.type === "consumer" && description.type === "answer") {
      // The SFU's answer to our offer on a consumer pc (restartConsumerIce).
      const publisher = message.remotePeerId;
      await state.consumers.get(publisher).setRemoteDescription(description);
      state.consumerAnswers[publisher] = (state.consumerAnswers[publisher] || 0) + 1;
    }
  }

  async function publish() {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: 320, height: 240 },
    });
    const self = mediaElements("self");
    self.video.srcObject = stream;
    const pc = (state.producer = new RTCPeerConnection({ iceServers: [] }));
    pc.onconnectionstatechange = () => {
      state.producerState = pc.connectionState;
    };
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
    // The deployed client's negotiated data channels, terminated and relayed by the SFU. It
    // re-offers on every negotiationneeded: counted here (a rejected m=application loops).
    pc.onnegotiationneeded = () => {
      state.negotiationNeeded += 1;
      if (harness.autoReoffer && state.producerAnswered && pc.signalingState === "stable") {
        window.reoffer().catch((err) => fail("reoffer", err));
      }
    };
    for (const [label, id] of [["chat", 100], ["features", 110]]) {
      const channel = (state.channels[label] = pc.createDataChannel(label, { negotiated: true, id }));
      channel.onmessage = (event) => state.channelMessages.push([label, event.data]);
    }
    await pc.setLocalDescription(await pc.createOffer());
    const local = pc.localDescription;
    state.producerOffers += 1;
    send("handshake", {
      type: "producer",
      roomId: state.roomId,
      description: { type: local.type, sdp: local.sdp },
    });
  }

  window.arbiterJoin = (wsUrl, roomId, id, name) =>
    new Promise((resolve, reject) => {
      state.id = id;
      state.roomId = roomId;
      const ws = (state.ws = new WebSocket(wsUrl));
      let queue = Promise.resolve(); // handle frames one at a time, in order
      let identified = false;
      ws.onopen = () => send("identify", { type: "client", id, roomId, name });
      ws.onerror = () => reject(new Error("WebSocket error"));
      ws.onclose = (event) => {
        state.frames.push("closed:" + event.code);
      };
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (err) {
          fail("parse", err);
          return;
        }
        if (message.type === "identified" && !identified) {
          identified = true;
          publish().then(resolve, (err) => {
            fail("publish", err);
            reject(err);
          });
          return;
        }
        if (message.type === "error" && !identified) {
          reject(new Error("identify failed: " + JSON.stringify(message)));
        }
        queue = queue.then(() => onMessage(message)).catch((err) => fail(message.type, err));
      };
    });

  async function inbound(pc) {
    const out = { framesDecoded: 0, videoPacketsReceived: 0, packetsReceived: 0, totalSamplesReceived: 0, videos: {} };
    if (!pc) return out;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      if (s.kind === "video") {
        out.framesDecoded += s.framesDecoded || 0;
        out.videoPacketsReceived += s.packetsReceived || 0;
        out.videos[s.mid || s.ssrc] = s.framesDecoded || 0; // per video m-section
        if (s.frameWidth) out.frameWidth = s.frameWidth;
        if (s.frameHeight) out.frameHeight = s.frameHeight;
        if (s.decoderImplementation) out.decoder = s.decoderImplementation;
      } else if (s.kind === "audio") {
        out.packetsReceived += s.packetsReceived || 0;
        out.totalSamplesReceived += s.totalSamplesReceived || 0;
      }
    });
    return out;
  }

  // {remote: {publisher: {framesDecoded, packetsReceived, totalSamplesReceived, ...}},
  //  producer: {audio: {packetsSent}, video: {packetsSent, framesEncoded, encoder}}}
  window.stats = async () => {
    const remote = {};
    for (const [publisher, pc] of state.consumers) remote[publisher] = await inbound(pc);
    const producer = { audio: { packetsSent: 0 }, video: { packetsSent: 0 } };
    if (state.producer) {
      const report = await state.producer.getStats();
      report.forEach((s) => {
        if (s.type !== "outbound-rtp" || !producer[s.kind]) return;
        producer[s.kind].packetsSent += s.packetsSent || 0;
        if (s.kind === "video") {
          producer.video.framesEncoded = (producer.video.framesEncoded || 0) + (s.framesEncoded || 0);
          if (s.encoderImplementation) producer.video.encoder = s.encoderImplementation;
        }
      });
    }
    return { remote, producer };
  };

  window.arbiterState = () => ({
    id: state.id,
    errors: state.errors,
    frames: state.frames,
    producerAnswered: state.producerAnswered,
    producerAnswers: state.producerAnswers,
    producerState: state.producerState,
    consumerStates: state.consumerStates,
    channelStates: Object.fromEntries(
      Object.entries(state.channels).map(([label, channel]) => [label, channel.readyState])),
    channelMessages: state.channelMessages,
    negotiationNeeded: state.negotiationNeeded,
    producerOffers: state.producerOffers,
    answerUfrags: state.answerUfrags,
    consumerOffers: state.consumerOffers,
    consumerAnswers: state.consumerAnswers,
    consumerPcs: state.consumerPcs,
  });

  window.channelSend = (label, text) => state.channels[label].send(text);

  // A re-offer on the producer pc, as the deployed client sends on negotiationneeded.
  window.reoffer = async () => {
    const pc = state.producer;
    await pc.setLocalDescription(await pc.createOffer());
    state.producerOffers += 1;
    send("handshake", {
      type: "producer",
      roomId: state.roomId,
      description: { type: pc.localDescription.type, sdp: pc.localDescription.sdp },
    });
  };

  // Producer pc changes: each fires negotiationneeded (re-offered when autoReoffer is set).
  window.addVideo = async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 160, height: 120 } });
    state.extraVideo = state.producer.addTrack(stream.getVideoTracks()[0], stream);
  };
  window.removeVideo = () => {
    const sender = state.extraVideo;
    state.extraVideo = null;
    sender.track.stop();
    state.producer.removeTrack(sender);
  };
  window.restartIce = () => state.producer.restartIce();

  // An ICE restart of one consumer pc, offered by us (the SFU answers on the same transport).
  window.restartConsumerIce = async (publisher) => {
    const pc = state.consumers.get(publisher);
    pc.restartIce();
    await pc.setLocalDescription(await pc.createOffer());
    send("handshake", {
      type: "consumer",
      remotePeerId: publisher,
      roomId: state.roomId,
      description: { type: pc.localDescription.type, sdp: pc.localDescription.sdp },
    });
    return ufragOf(pc.localDescription.sdp);
  };
  // ... or asked of the SFU, which re-offers with new credentials.
  window.askConsumerRestart = (publisher) =>
    send("handshake", { type: "consumer", remotePeerId: publisher, roomId: state.roomId, restartIce: true });

  window.consumerUfrags = (publisher) => {
    const pc = state.consumers.get(publisher);
    return pc && {
      local: ufragOf(pc.localDescription && pc.localDescription.sdp),
      remote: ufragOf(pc.remoteDescription && pc.remoteDescription.sdp),
    };
  };

  window.arbiterLeave = () => {
    for (const pc of state.consumers.values()) pc.close();
    state.consumers.clear();
    if (state.producer) state.producer.close();
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      send("disconnect");
      state.ws.close();
    }
  };
})();
