// Local media: camera and microphone with device pickers, a placeholder video track when there
// is no camera (so the producer always has a video sender for screen sharing), screen capture,
// and an audio-level meter (WebAudio AnalyserNode) used for the speaking highlight.

/** The camera capture: 1280x720, sent as three simulcast encodings (simulcast.js). */
export const VIDEO_CONSTRAINTS = {
  width: { ideal: 1280 },
  height: { ideal: 720 },
  frameRate: { ideal: 24, max: 30 },
};

export class LocalMedia {
  constructor() {
    /** @type {MediaStreamTrack | null} */
    this.audioTrack = null;
    /** @type {MediaStreamTrack | null} a real camera, or null */
    this.cameraTrack = null;
    /** @type {MediaStreamTrack | null} canvas track used when there is no camera */
    this.placeholder = null;
    this.audioDeviceId = localStorage.getItem("arbiter.audioDevice") || "";
    this.videoDeviceId = localStorage.getItem("arbiter.videoDevice") || "";
    this.micOn = localStorage.getItem("arbiter.micOn") !== "false";
    this.camOn = localStorage.getItem("arbiter.camOn") !== "false";
    this.error = "";
  }

  /**
   * Open (or re-open after a picker change) the camera and microphone.
   *
   * @returns {Promise<MediaStream | null>}
   */
  async open() {
    this.error = "";
    const wantAudio = this.audioDeviceId ? { deviceId: { exact: this.audioDeviceId } } : true;
    const wantVideo = this.videoDeviceId
      ? { ...VIDEO_CONSTRAINTS, deviceId: { exact: this.videoDeviceId } }
      : VIDEO_CONSTRAINTS;
    this.stopDevices();
    let stream = null;
    const attempts = [
      { audio: wantAudio, video: wantVideo },
      { audio: wantAudio, video: false },
      { audio: false, video: wantVideo },
    ];
    for (const constraints of attempts) {
      try {
        stream = await navigator.mediaDevices.getUserMedia(constraints);
        break;
      } catch (err) {
        this.error = describeMediaError(err);
        const name = /** @type {{name?: string} | null} */ (err)?.name;
        if (name === "OverconstrainedError" && (this.audioDeviceId || this.videoDeviceId)) {
          // A remembered device is gone: fall back to the defaults once.
          this.audioDeviceId = this.videoDeviceId = "";
          return this.open();
        }
      }
    }
    if (stream) {
      this.audioTrack = stream.getAudioTracks()[0] || null;
      this.cameraTrack = stream.getVideoTracks()[0] || null;
      if (this.audioTrack && this.cameraTrack) this.error = "";
      else if (!this.cameraTrack) this.error = this.error || "No camera found.";
    }
    if (this.audioTrack) this.audioTrack.enabled = this.micOn;
    if (this.cameraTrack) {
      this.cameraTrack.enabled = this.camOn;
      this.cameraTrack.contentHint = "motion";
    }
    return stream;
  }

  stopDevices() {
    this.audioTrack?.stop();
    this.cameraTrack?.stop();
    this.audioTrack = this.cameraTrack = null;
  }

  /** The video track the producer sends when not screen sharing. */
  videoTrack() {
    if (this.cameraTrack) return this.cameraTrack;
    if (!this.placeholder) this.placeholder = placeholderTrack();
    return this.placeholder;
  }

  get hasCamera() {
    return !!this.cameraTrack;
  }

  get hasMic() {
    return !!this.audioTrack;
  }

  /** @param {boolean} on */
  setMic(on) {
    this.micOn = on;
    localStorage.setItem("arbiter.micOn", String(on));
    if (this.audioTrack) this.audioTrack.enabled = on;
  }

  /** @param {boolean} on */
  setCam(on) {
    this.camOn = on;
    localStorage.setItem("arbiter.camOn", String(on));
    if (this.cameraTrack) this.cameraTrack.enabled = on;
  }

  /**
   * @param {{audio?: string, video?: string}} change  device ids
   * @returns {Promise<MediaStream | null>}
   */
  async chooseDevices({ audio, video }) {
    if (audio !== undefined) {
      this.audioDeviceId = audio;
      localStorage.setItem("arbiter.audioDevice", audio);
    }
    if (video !== undefined) {
      this.videoDeviceId = video;
      localStorage.setItem("arbiter.videoDevice", video);
    }
    return this.open();
  }

  static async devices() {
    try {
      const all = await navigator.mediaDevices.enumerateDevices();
      return {
        audio: all.filter((d) => d.kind === "audioinput"),
        video: all.filter((d) => d.kind === "videoinput"),
      };
    } catch {
      return { audio: [], video: [] };
    }
  }
}

/** A screen, window or tab; resolves with its video track (null when the user cancels). */
export async function captureScreen() {
  if (!navigator.mediaDevices?.getDisplayMedia) {
    throw new Error("This browser cannot share the screen.");
  }
  try {
    const stream = await navigator.mediaDevices.getDisplayMedia({
      video: { width: { max: 1920 }, height: { max: 1080 }, frameRate: { ideal: 15, max: 30 } },
      audio: false,
    });
    const track = stream.getVideoTracks()[0];
    // "detail": the encoder keeps the resolution and drops frame rate under pressure.
    if (track) track.contentHint = "detail";
    return track || null;
  } catch (err) {
    const name = /** @type {{name?: string} | null} */ (err)?.name;
    if (name === "NotAllowedError" || name === "AbortError") return null;
    throw err;
  }
}

function placeholderTrack() {
  const canvas = document.createElement("canvas");
  canvas.width = 320;
  canvas.height = 180;
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
  const paint = () => {
    ctx.fillStyle = "#15171c";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  };
  paint();
  const stream = canvas.captureStream(2);
  const track = stream.getVideoTracks()[0];
  const timer = setInterval(paint, 500); // keep frames flowing so the sender stays alive
  track.addEventListener("ended", () => clearInterval(timer));
  return track;
}

/**
 * @param {unknown} err  what getUserMedia threw
 * @returns {string}
 */
export function describeMediaError(err) {
  switch (/** @type {{name?: string} | null} */ (err)?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return window.isSecureContext
        ? "Camera and microphone access was blocked. Allow it in the browser's site settings."
        : "Cameras need a secure page: open this call over https:// (or on localhost).";
    case "NotFoundError":
      return "No camera or microphone found.";
    case "NotReadableError":
      return "The camera or microphone is in use by another application.";
    default:
      if (err) console.warn("Arbiter: camera or microphone:", err);
      return err ? "Could not open the camera or microphone." : "";
  }
}

/**
 * Audio level of a track, 0..1, sampled by an AnalyserNode. One shared AudioContext; it is
 * created on a user gesture (the Join click) so autoplay policies allow it to run.
 */
/** @type {AudioContext | null} */
let audioContext = null;

/** @returns {AudioContext | null} */
export function ensureAudioContext() {
  if (!audioContext) {
    /** @type {typeof AudioContext | undefined} */
    const Ctx = window.AudioContext || /** @type {any} */ (window).webkitAudioContext;
    if (!Ctx) return null;
    audioContext = new Ctx();
  }
  if (audioContext.state === "suspended") audioContext.resume().catch(() => {});
  return audioContext;
}

export class LevelMeter {
  /** @param {MediaStreamTrack | null} track */
  constructor(track) {
    this.level = 0;
    /** @type {MediaStreamAudioSourceNode | null} */
    this.source = null;
    /** @type {AnalyserNode | null} */
    this.analyser = null;
    this.buffer = new Float32Array(512);
    const ctx = ensureAudioContext();
    if (!ctx || !track) return;
    try {
      this.source = ctx.createMediaStreamSource(new MediaStream([track]));
      this.analyser = ctx.createAnalyser();
      this.analyser.fftSize = this.buffer.length;
      this.source.connect(this.analyser);
    } catch {
      this.analyser = null;
    }
  }

  /** RMS level of the last ~10 ms, smoothed. */
  sample() {
    if (!this.analyser) return 0;
    this.analyser.getFloatTimeDomainData(this.buffer);
    let sum = 0;
    for (const v of this.buffer) sum += v * v;
    const rms = Math.sqrt(sum / this.buffer.length);
    this.level = Math.max(rms, this.level * 0.85);
    return this.level;
  }

  close() {
    try {
      this.source?.disconnect();
    } catch {
      // already disconnected
    }
    this.analyser = null;
  }
}
