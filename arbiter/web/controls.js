// The person's own controls: microphone, camera, screen share, chat panel, the speaker/grid
// layout and copying links.

import { captureScreen } from "./media.js";
import { grid, media, send, SELF, session, state } from "./context.js";
import { $, $as, hydrateIcons, LAYOUTS, toast } from "./ui.js";

const LAYOUT_KEY = "arbiter.layout";

/**
 * What we tell the room we send: {audio, video}.
 *
 * @returns {import("./ui.js").Features}
 */
export function features() {
  return {
    audio: media.micOn && media.hasMic,
    video: (media.camOn && media.hasCamera) || !!state.screenTrack,
  };
}

/** The video we publish: the shared screen, else the camera (or its placeholder). */
export function outgoingVideo() {
  return state.screenTrack || media.videoTrack();
}

export function renderMediaButtons() {
  const micOn = media.micOn && media.hasMic;
  const camOn = media.camOn && media.hasCamera;
  /** @type {[string, boolean, string, string, boolean][]} */
  const buttons = [
    ["#lobby-mic", micOn, "mic", "micOff", media.hasMic],
    ["#mic-toggle", micOn, "mic", "micOff", media.hasMic],
    ["#lobby-cam", camOn, "cam", "camOff", media.hasCamera],
    ["#cam-toggle", camOn, "cam", "camOff", media.hasCamera],
  ];
  for (const [selector, on, iconOn, iconOff, hasDevice] of buttons) {
    const button = $as(selector, HTMLButtonElement);
    button.setAttribute("aria-pressed", String(on));
    button.disabled = !hasDevice;
    button.classList.toggle("off", !on);
    setIcon(button, on ? iconOn : iconOff);
  }
  $("#mic-toggle .label").textContent = micOn ? "Mute" : "Unmute";
  $("#cam-toggle .label").textContent = camOn ? "Stop video" : "Start video";
  $("#preview-tile").classList.toggle("camera-off", !camOn);
  const sharing = !!state.screenTrack;
  $("#share-toggle").setAttribute("aria-pressed", String(sharing));
  $("#share-toggle").classList.toggle("active", sharing);
  $("#share-toggle .label").textContent = sharing ? "Stop share" : "Share";
  $as("#share-toggle", HTMLButtonElement).disabled = !navigator.mediaDevices?.getDisplayMedia;
  if (grid.get(SELF)) grid.setFeatures(SELF, features());
}

/**
 * The icon in `button`'s [data-icon] slot (redrawn only when it changes).
 *
 * @param {HTMLElement} button
 * @param {string} name
 */
export function setIcon(button, name) {
  const slot = $("[data-icon]", button);
  if (slot.dataset.icon === name) return;
  slot.dataset.icon = name;
  hydrateIcons(button);
}

/** @param {boolean} on */
export function setMic(on) {
  media.setMic(on);
  renderMediaButtons();
  send("features", features());
}

/** @param {boolean} on */
export function setCam(on) {
  media.setCam(on);
  renderMediaButtons();
  send("features", features());
}

export async function toggleShare() {
  if (state.screenTrack) return stopShare();
  let track;
  try {
    track = await captureScreen();
  } catch (err) {
    console.warn("Arbiter: screen capture failed:", err);
    toast("Could not share the screen.");
    return;
  }
  if (!track) return;
  if (state.phase === "left") return track.stop();
  state.screenTrack = track;
  track.addEventListener("ended", () => stopShare()); // "Stop sharing" in the browser's UI
  await session.call?.replaceVideo(track);
  grid.setVideo(SELF, track, { mirror: false });
  renderMediaButtons();
  send("features", features());
}

export async function stopShare({ republish = true } = {}) {
  const track = state.screenTrack;
  if (!track) return;
  state.screenTrack = null;
  track.stop();
  if (!republish) return;
  await session.call?.replaceVideo(media.videoTrack());
  grid.setVideo(SELF, media.cameraTrack, { mirror: true });
  renderMediaButtons();
  send("features", features());
}

/**
 * The speaker/grid layout: applied to the grid, remembered in localStorage. The button says
 * what a click switches to ("Grid view" while the speaker layout is on).
 *
 * @param {string} [mode]  a Layout; default: the remembered one
 */
export function setLayout(mode = localStorage.getItem(LAYOUT_KEY) || LAYOUTS[0]) {
  grid.setMode(mode);
  try {
    localStorage.setItem(LAYOUT_KEY, grid.mode);
  } catch {
    // storage full or denied: the layout still applies to this page
  }
  const other = grid.mode === "speaker" ? "grid" : "speaker";
  const button = $("#layout-toggle");
  const label = other === "grid" ? "Grid view" : "Speaker view";
  button.setAttribute("aria-label", label);
  $(".label", button).textContent = other === "grid" ? "Grid" : "Speaker";
  setIcon(button, other === "grid" ? "gridView" : "speakerView");
}

export function toggleLayout() {
  setLayout(grid.mode === "speaker" ? "grid" : "speaker");
}

/**
 * @param {import("./ui.js").Chat} chat
 * @param {boolean} [open]  default: the other way round
 */
export function toggleChat(chat, open = $("#chat").hidden) {
  $("#chat").hidden = !open;
  $("#chat-toggle").setAttribute("aria-pressed", String(open));
  $("#call").classList.toggle("chat-open", open);
  chat.show(open);
  grid.layout();
  if (open) $("#chat-input").focus();
  else $("#chat-toggle").focus();
}

/**
 * Copy `text` to the clipboard (or show it when the browser refuses); toast `done`.
 *
 * @param {string} text
 * @param {string} done
 */
export async function copyText(text, done) {
  try {
    await navigator.clipboard.writeText(text);
    toast(done);
  } catch {
    const area = Object.assign(document.createElement("textarea"), { value: text });
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    toast(ok ? done : text);
  }
}
