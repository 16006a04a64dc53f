// Start-up: the landing page or the lobby, the call's buttons, and a read-only test hook
// (window.arbiter). The rest lives in its own module:
//   context.js     shared state, local media, grid and chat, the current join's session
//   lobby.js       landing page, lobby, the password field and refusals shown there
//   join.js        join flow, rejoin with back-off, leaving, being removed, signaling frames
//   peers.js       remote participants' tiles and tracks, stats and speaking loops
//   controls.js    microphone, camera, screen share, layout, chat panel, copying links
//   preferences.js what we want of each remote tile's video (`preferences` frames)
//   simulcast.js   our camera's three encodings, `layers` frames and screen sharing
//   moderation.js  moderator key, Mute/Remove/Lock/Password controls, lock indicator

import { chat, grid, media, preferences, roomLink, roomPath, session, state } from "./context.js";
import { copyText, setCam, setLayout, setMic, toggleChat, toggleLayout, toggleShare } from "./controls.js";
import { join, leave, pageHidden, pageShown } from "./join.js";
import { startLanding, startLobby } from "./lobby.js";
import { setupModeration, takeKeyFromFragment } from "./moderation.js";
import { $, hydrateIcons } from "./ui.js";

// Before anything else: a moderator link's key leaves the address bar at once.
takeKeyFromFragment();

// ------------------------------------------------------------------ test hook (read-only)

/** @type {any} */ (window).arbiter = Object.freeze({
  state: () => ({
    phase: state.phase,
    joined: state.phase === "joined",
    id: state.id,
    roomId: state.roomId,
    name: state.name,
    banner: state.banner,
    sharing: !!state.screenTrack,
    tiles: [...grid.tiles.values()].map((t) => {
      return {
        id: t.self ? state.id : t.id, // our own tile is keyed by a Symbol, not by our id
        self: t.self,
        name: t.name,
        muted: !t.muted.hidden,
        cameraOff: !t.camOff.hidden,
        moderator: !t.moderator.hidden,
        actions: [...t.actions.querySelectorAll("button")].map((b) => b.textContent),
        speaking: t.node.classList.contains("speaking"),
        activeSpeaker: t.node.classList.contains("active-speaker"),
        large: t.node.classList.contains("large"),
        quality: t.quality.dataset.quality || null,
        status: t.status.textContent,
      };
    }),
    chat: chat.messages.map(({ sender, name, content, ts }) => ({ sender, name, content, ts })),
    errors: [...state.errors],
    marks: { ...state.marks },
    lobby: { ...state.lobby },
    moderator: state.moderator,
    hasModeratorKey: !!state.moderatorKey,
    locked: state.locked,
    passwordRequired: state.passwordRequired,
    removedBy: state.removedBy,
    restarting: performance.now() < state.restartUntil,
    notices: [...state.notices],
    layout: grid.mode,
    preferences: preferences.snapshot(),
  }),
  stats: async () => (session.call ? session.call.stats({ track: false }) : { remote: {}, producer: {} }),
  // The producer connection's SDP (our offer, the SFU's answer) and the video sender's
  // encodings as the browser has them.
  producerSdp: () => ({
    local: session.call?.producer?.localDescription?.sdp ?? null,
    remote: session.call?.producer?.remoteDescription?.sdp ?? null,
    videoMid: session.call?.videoTransceiver?.mid ?? null,
  }),
  encodings: async () => (session.call ? session.call.encodings() : []),
});

// ------------------------------------------------------------------ start

hydrateIcons();
setLayout();
$("#mic-toggle").addEventListener("click", () => setMic(!media.micOn));
$("#cam-toggle").addEventListener("click", () => setCam(!media.camOn));
$("#share-toggle").addEventListener("click", () => toggleShare());
$("#layout-toggle").addEventListener("click", () => toggleLayout());
$("#chat-toggle").addEventListener("click", () => toggleChat(chat));
$("#chat-close").addEventListener("click", () => toggleChat(chat, false));
$("#copy-link").addEventListener("click", () => copyText(roomLink(), "Link copied"));
$("#leave").addEventListener("click", () => leave());
$("#rejoin").addEventListener("click", () => location.reload());
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !$("#chat").hidden && !document.querySelector("dialog[open]")) {
    toggleChat(chat, false);
  }
});
window.addEventListener("pagehide", () => pageHidden());
window.addEventListener("pageshow", (event) => pageShown(event));
setupModeration();

if (roomPath) startLobby(join);
else startLanding();
