// One WebSocket to the gateway for one identity (docs/PROTOCOL.md section 3).
//
// The gateway allows one identity per connection, so a rejoin is a new Signaling with a new
// id; the reconnect policy (back-off, the whole HTTP join flow again) lives in join.js.
// Frames to the server are {"action", "data"}; frames from it are plain objects whose `type`
// says what they are (handshakes from the SFU arrive as the bare inner object).

export class SignalingError extends Error {
  /**
   * @param {string} message  the server's refusal (status set), else a plain sentence
   * @param {number} [status]  the identify error's status; 0 when the socket failed
   * @param {string} [detail]  what happened technically, for the console
   */
  constructor(message, status = 0, detail = "") {
    super(message);
    this.name = "SignalingError";
    this.status = status;
    this.detail = detail;
  }
}

/**
 * A frame from the server: an object whose `type` says what it is; everything in it is
 * untrusted (checked where it is used).
 *
 * @typedef {Record<string, any>} ServerFrame
 */

/**
 * What identify sends (docs/PROTOCOL.md section 3).
 *
 * @typedef {object} Identity
 * @property {string} id
 * @property {number} roomId
 * @property {string} name
 * @property {string} [password]
 * @property {string} [moderatorKey]
 */

export class Signaling {
  /**
   * @param {string} url   ws:// or wss:// URL of /ws
   * @param {{onMessage: (msg: ServerFrame) => void, onClose: (info: {code: number, reason: string}) => void}} handlers
   *   onMessage gets every frame after `identified`; onClose fires once, when the socket
   *   closes or fails for any reason other than close() (info: {code, reason}).
   */
  constructor(url, { onMessage, onClose }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onClose = onClose;
    /** @type {WebSocket | null} */
    this.ws = null;
    this.closedByUs = false;
    this.identified = false;
    this.sent = 0;
  }

  /**
   * Open the socket and identify; resolves with the `identified` frame, rejects with a
   * SignalingError carrying the refusal's status (401 password required, 403 wrong password,
   * locked or full, 429 too many refusals). `password` and `moderatorKey` go only when set.
   *
   * @param {Identity} identity
   * @param {{timeout?: number}} [opts]  milliseconds
   * @returns {Promise<ServerFrame>}
   */
  identify({ id, roomId, name, password, moderatorKey }, { timeout = 10000 } = {}) {
    return new Promise((resolve, reject) => {
      let settled = false;
      /**
       * @template T
       * @param {(value: T) => void} fn
       * @param {T} value
       */
      const settle = (fn, value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn(value);
      };
      const timer = setTimeout(() => {
        settle(reject, new SignalingError("The server did not answer in time.", 0, `identify: no answer in ${timeout} ms`));
        this.close();
      }, timeout);
      let ws;
      try {
        ws = this.ws = new WebSocket(this.url);
      } catch (err) {
        const detail = `WebSocket ${this.url}: ${/** @type {Error} */ (err).message}`;
        settle(reject, new SignalingError("Cannot reach the server. Check your network connection.", 0, detail));
        return;
      }
      /** @type {Identity & {type: "client"}} */
      const data = { type: "client", id, roomId, name };
      if (password) data.password = password;
      if (moderatorKey) data.moderatorKey = moderatorKey;
      ws.onopen = () => this.send("identify", data);
      ws.onmessage = (event) => {
        let msg;
        try {
          msg = JSON.parse(event.data);
        } catch {
          return;
        }
        if (!msg || typeof msg !== "object") return;
        if (!this.identified) {
          if (msg.type === "identified") {
            this.identified = true;
            settle(resolve, msg);
            return;
          }
          if (msg.type === "error" && msg.action === "identify") {
            settle(reject, new SignalingError(msg.message || "identify failed", msg.status));
            this.close();
            return;
          }
        }
        try {
          this.onMessage(msg);
        } catch (err) {
          console.error("signaling handler failed", msg.type, err);
        }
      };
      ws.onerror = () => {
        // onclose follows; it carries the code.
      };
      ws.onclose = (event) => {
        this.ws = null;
        const detail = `WebSocket closed ${event.code}${event.reason ? ` ${event.reason}` : ""}`;
        settle(reject, new SignalingError("Lost the connection to the server.", 0, detail));
        if (!this.closedByUs && this.identified) {
          this.onClose({ code: event.code, reason: event.reason });
        }
      };
    });
  }

  get open() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * @param {string} action
   * @param {object} [data]
   * @returns {boolean} false when the socket is not open (nothing sent)
   */
  send(action, data = {}) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ action, data }));
    this.sent++;
    return true;
  }

  /** Explicit leave: `disconnect`, then close. Never fires onClose. */
  leave() {
    if (this.identified) this.send("disconnect", {});
    this.close();
  }

  close() {
    this.closedByUs = true;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) {
      try {
        ws.close(1000, "leaving");
      } catch {
        // already closing
      }
    }
  }
}
