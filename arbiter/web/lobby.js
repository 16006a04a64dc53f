// Before the call: the landing page (pick a room) and the lobby (name, preview, devices, and
// what it takes to get in: a new room offers an optional password, a protected one asks for
// it, and a refused join comes back here saying why).

import { getConfig, roomInfo } from "./api.js";
import { media, roomPath, show, state } from "./context.js";
import { renderMediaButtons, setCam, setMic } from "./controls.js";
import { LocalMedia } from "./media.js";
import { storedKey } from "./moderation.js";
import { suggestRoomName } from "./names.js";
import { $, fillDevices, initials } from "./ui.js";

const MODES = {
  join: { note: "", field: false },
  create: {
    note: "Nobody has opened this room yet: joining creates it, and you will be its moderator.",
    field: true,
    label: "Password (optional)",
    hint: "Whoever joins will need it. Leave it empty for an open room.",
    autocomplete: "new-password",
  },
  password: {
    note: "This room is protected by a password.",
    field: true,
    label: "Room password",
    hint: "",
    autocomplete: "off",
  },
  moderator: { note: "You are this room's moderator.", field: false },
};

// The landing page's suggested name, handed to the lobby it opens: 65 random bits nobody has
// used, so the lobby knows the room is new without asking (a lookup of a name that has no room
// is a 404, which the browser reports in the console as an error).
const FRESH_KEY = "arbiter.freshRoom";

export function startLanding() {
  show("landing");
  const suggested = suggestRoomName();
  $("#landing-room").value = suggested;
  $("#landing-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const room = $("#landing-room").value.trim().replace(/^\/+|\/+$/g, "");
    if (!room) return;
    try {
      if (room === suggested) sessionStorage.setItem(FRESH_KEY, room);
    } catch {
      // storage refused: the lobby asks the server
    }
    location.assign(`/${encodeURIComponent(room)}`);
  });
  $("#landing-room").focus();
}

/** The lobby, once per page; `onJoin()` runs the join once the form is valid. */
export function startLobby(onJoin) {
  show("lobby");
  document.title = `${roomPath} · Arbiter`;
  $("#lobby-room").textContent = roomPath;
  const nameInput = $("#name");
  nameInput.value = localStorage.getItem("arbiter.name") || "";
  nameInput.addEventListener("input", () => {
    $("#preview-avatar").textContent = initials(nameInput.value || "?");
  });
  $("#preview-avatar").textContent = initials(nameInput.value || "?");
  $("#join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (takeLobbyForm()) onJoin();
  });
  $("#password").addEventListener("input", () => setLobbyMessage(""));
  $("#lobby-mic").addEventListener("click", () => setMic(!media.micOn));
  $("#lobby-cam").addEventListener("click", () => setCam(!media.camOn));
  $("#mic-select").addEventListener("change", (e) => reopenDevices({ audio: e.target.value }));
  $("#cam-select").addEventListener("change", (e) => reopenDevices({ video: e.target.value }));
  (nameInput.value ? $("#join") : nameInput).focus();
  setLobbyMode(storedKey() ? "moderator" : "join");
  state.mediaReady = openDevices();
  getConfig().then((c) => (state.config = c)); // warm: the Join click needs it
  (takeFresh() ? Promise.resolve({ exists: false }) : roomInfo(roomPath)).then((info) => {
    state.lobbyInfo = info;
    if (info) {
      state.passwordRequired = info.exists ? info.passwordRequired : null;
      if (state.phase === "lobby" && !state.lobby.message) setLobbyMode(lobbyModeFor(info));
    }
  });
}

/** Whether this page is the room the landing page just made up (once: a reload asks). */
function takeFresh() {
  try {
    const fresh = sessionStorage.getItem(FRESH_KEY) === roomPath;
    sessionStorage.removeItem(FRESH_KEY);
    return fresh;
  } catch {
    return false;
  }
}

function lobbyModeFor(info) {
  if (!info.exists) return "create";
  if (storedKey()) return "moderator"; // a stale key is found out on identify
  return info.passwordRequired ? "password" : "join";
}

function setLobbyMode(mode) {
  const m = MODES[mode];
  state.lobby.mode = mode;
  $("#join-form").dataset.mode = mode;
  $("#lobby-note").textContent = m.note;
  $("#lobby-note").hidden = !m.note;
  $("#password-field").hidden = !m.field;
  const input = $("#password");
  input.required = mode === "password"; // the form is novalidate: the lobby says what is missing
  if (m.field) {
    $("#password-label").textContent = m.label;
    $("#password-hint").textContent = m.hint;
    $("#password-hint").hidden = !m.hint;
    input.autocomplete = m.autocomplete;
  }
}

function setLobbyMessage(text) {
  state.lobby.message = text;
  $("#join-error").textContent = text;
  $("#join-error").hidden = !text;
  $("#password").setAttribute("aria-invalid", String(!!text && state.lobby.mode === "password"));
}

/** Name and password from the form into `state`; false (and says why) when one is missing. */
function takeLobbyForm() {
  const mode = state.lobby.mode;
  const password = $("#password-field").hidden ? "" : $("#password").value;
  if (mode === "password" && !password) {
    setLobbyMessage("Type the room password to join.");
    $("#password").focus();
    return false;
  }
  state.name = ($("#name").value.trim() || "Guest").slice(0, 64);
  localStorage.setItem("arbiter.name", state.name);
  state.creating = mode === "create";
  // A new room's password goes to claimRoom; a protected room's to identify.
  state.password = password;
  if (state.creating) state.passwordRequired = !!password;
  setLobbyMessage("");
  return true;
}

/**
 * Back to the lobby after a refused join: `mode` "password" asks for the password (the room
 * has one, or the one given was wrong); `message` says what happened.
 */
export function reopenLobby({ message, mode }) {
  show("lobby");
  state.phase = "lobby";
  if (mode) setLobbyMode(mode);
  setLobbyMessage(message);
  $("#preview").srcObject = media.cameraTrack ? new MediaStream([media.cameraTrack]) : null;
  $("#join").disabled = false;
  renderMediaButtons();
  if (!$("#password-field").hidden) {
    $("#password").focus();
    $("#password").select();
  } else {
    $("#join").focus();
  }
}

async function openDevices(change) {
  $("#lobby-status").textContent = "Opening camera and microphone…";
  await (change ? media.chooseDevices(change) : media.open());
  $("#media-error").textContent = media.error;
  $("#lobby-status").textContent = "";
  $("#preview").srcObject = media.cameraTrack ? new MediaStream([media.cameraTrack]) : null;
  const devices = await LocalMedia.devices();
  fillDevices($("#mic-select"), devices.audio, media.audioTrack?.getSettings().deviceId, "Microphone");
  fillDevices($("#cam-select"), devices.video, media.cameraTrack?.getSettings().deviceId, "Camera");
  renderMediaButtons();
}

function reopenDevices(change) {
  state.mediaReady = openDevices(change);
}
