// A minimal Arbiter participant for the browser tests (tests/test_media_browser.py).
// Test harness only, not the product's web client. Injected into a page served from the
// Arbiter server's own origin; the test calls `await window.arbiterJoin(wsUrl, roomId, id, name)`
// and later `await window.stats()`, `window.arbiterState()`, `window.channelSend(label, text)`
// and `window.arbiterLeave()`.
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
  };

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

  async function onConsumerOffer(publisher, description) {
    const old = state.consumers.get(publisher);
    if (old) old.close();
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.consumers.set(publisher, pc);
    state.consumerStates[publisher] = pc.connectionState;
    pc.onconnectionstatechange = () => {
      if (state.consumers.get(publisher) === pc) {
        state.consumerStates[publisher] = pc.connectionState;
      }
    };
    pc.ontrack = (event) => {
      const elements = mediaElements(publisher);
      const element = event.track.kind === "video" ? elements.video : elements.audio;
      element.srcObject = new MediaStream([event.track]);
      element.play().catch((err) => fail("play " + event.track.kind, err));
    };
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
    } else if (message.type === "consumer" && description.type === "offer") {
      await onConsumerOffer(message.remotePeerId, description);
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
    };
    for (const [label, id] of [["chat", 100], ["features", 110]]) {
      const channel = (state.channels[label] = pc.createDataChannel(label, { negotiated: true, id }));
      channel.onmessage = (event) => state.channelMessages.push([label, event.data]);
    }
    await pc.setLocalDescription(await pc.createOffer());
    const local = pc.localDescription;
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
    const out = { framesDecoded: 0, videoPacketsReceived: 0, packetsReceived: 0, totalSamplesReceived: 0 };
    if (!pc) return out;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      if (s.kind === "video") {
        out.framesDecoded += s.framesDecoded || 0;
        out.videoPacketsReceived += s.packetsReceived || 0;
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
  });

  window.channelSend = (label, text) => state.channels[label].send(text);

  // A re-offer on the producer pc, as the deployed client sends on negotiationneeded.
  window.reoffer = async () => {
    const pc = state.producer;
    await pc.setLocalDescription(await pc.createOffer());
    send("handshake", {
      type: "producer",
      roomId: state.roomId,
      description: { type: pc.localDescription.type, sdp: pc.localDescription.sdp },
    });
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
