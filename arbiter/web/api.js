// The HTTP side of joining (docs/PROTOCOL.md section 2): client config and the room id for a
// URL path.
//
// resolveRoom: GET /getRoomId; on 404 PATCH /claimRoom (with the creator's password, if any;
// the answer's moderatorKey goes to the caller); on 404 PUT /createRoom and claim again.
// Transient failures (network errors, 5xx, no ready room yet) are retried with exponential
// back-off; what is still failing after the last attempt is a JoinError with a message a person
// can act on.

export class JoinError extends Error {
  /**
   * @param {string} message  a plain sentence for the person (banners show it)
   * @param {{retryable?: boolean, detail?: string}} [opts]  `detail`: what went wrong
   *   technically (the browser's or the server's words), for the console only
   */
  constructor(message, { retryable = true, detail = "" } = {}) {
    super(message);
    this.name = "JoinError";
    this.retryable = retryable;
    this.detail = detail;
  }
}

/**
 * @typedef {object} ApiAnswer
 * @property {number} status  the HTTP status; 0 when no answer came (network error, timeout)
 * @property {Record<string, any>} data  the JSON body ({} when none); for status 0, {message}
 * @property {boolean} [timedOut]  status 0 because the server took longer than the timeout
 */

/**
 * A plain sentence for an API answer that is not what the join needed; the server's or the
 * browser's own words ("Failed to fetch", "Too many requests") stay in the console.
 *
 * @param {ApiAnswer} r
 * @returns {string}
 */
export function plainProblem(r) {
  if (r.status === 0) {
    return r.timedOut
      ? "The server is taking too long to answer."
      : "Cannot reach the server. Check your network connection.";
  }
  if (r.status === 429) return "The server is busy.";
  if (r.status >= 500) return "The server ran into a problem.";
  return "The server refused the request.";
}

/**
 * What an API answer was, for the console: `GET /config: 0 Failed to fetch`.
 *
 * @param {string} what
 * @param {ApiAnswer} r
 */
function detailOf(what, r) {
  const message = r.data?.reason || r.data?.message || "";
  return `${what}: ${r.status}${message ? ` ${message}` : ""}`;
}

/**
 * Resolve after `ms`; reject when `signal` aborts first.
 *
 * @param {number} ms
 * @param {AbortSignal} [signal]
 * @returns {Promise<void>}
 */
export const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new DOMException("aborted", "AbortError"));
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason ?? new DOMException("aborted", "AbortError"));
      },
      { once: true },
    );
  });

/**
 * Exponential back-off with jitter: 0.5 s, 1 s, 2 s, ... capped at `cap` ms.
 *
 * @param {number} attempt  0 for the first retry
 * @param {{base?: number, cap?: number}} [opts]  milliseconds
 * @returns {number} milliseconds
 */
export function backoff(attempt, { base = 500, cap = 10000 } = {}) {
  const ms = Math.min(cap, base * 2 ** attempt);
  return Math.round(ms * (0.8 + Math.random() * 0.4));
}

/**
 * The room name from the page URL: the path without its leading and trailing '/'.
 *
 * @param {{pathname: string}} [loc]
 */
export function roomPathFromLocation(loc = window.location) {
  let path;
  try {
    path = decodeURIComponent(loc.pathname);
  } catch {
    path = loc.pathname;
  }
  return path.replace(/^\/+|\/+$/g, "");
}

/**
 * @param {string} method
 * @param {string} path
 * @param {{body?: unknown, signal?: AbortSignal, timeout?: number}} [opts]
 * @returns {Promise<ApiAnswer>}
 */
async function request(method, path, { body, signal, timeout = 12000 } = {}) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(new DOMException("timed out", "TimeoutError")), timeout);
  const onAbort = () => ctrl.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const res = await fetch(path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: ctrl.signal,
      cache: "no-store",
    });
    let data = {};
    try {
      data = await res.json();
    } catch {
      data = {};
    }
    return { status: res.status, data };
  } catch (err) {
    if (signal?.aborted) throw err;
    const timedOut = ctrl.signal.aborted;
    return { status: 0, data: { message: String(/** @type {any} */ (err)?.message || err) }, timedOut };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * RTCIceServer dicts a peer connection accepts: urls (a string or strings) of stun(s):/turn(s):
 * servers, and for TURN a username and credential (Chromium refuses a TURN server without them,
 * which would fail the whole RTCPeerConnection). Anything else is dropped.
 *
 * @param {unknown} list  the server's (untrusted) list
 * @returns {RTCIceServer[]}
 */
export function cleanIceServers(list) {
  if (!Array.isArray(list)) return [];
  const out = [];
  for (const entry of list) {
    if (!entry || typeof entry !== "object") continue;
    /** @type {string[]} */
    const urls = (Array.isArray(entry.urls) ? entry.urls : [entry.urls]).filter(
      (/** @type {unknown} */ u) => typeof u === "string" && /^(stuns?|turns?):/i.test(u),
    );
    if (!urls.length) continue;
    const turn = urls.some((u) => /^turns?:/i.test(u));
    /** @type {RTCIceServer} */
    const server = { urls: Array.isArray(entry.urls) ? urls : urls[0] };
    if (typeof entry.username === "string" && typeof entry.credential === "string") {
      server.username = entry.username;
      server.credential = entry.credential;
    } else if (turn) {
      continue; // a TURN URL listed without credentials (GET /config): not usable
    }
    out.push(server);
  }
  return out;
}

/**
 * The ICE servers for one join: the `identified` frame's (it carries the TURN credentials,
 * docs/PROTOCOL.md section 3), or /config's list from a server that does not send them there.
 *
 * @param {{iceServers?: unknown} | null | undefined} identified
 * @param {{iceServers?: unknown} | null | undefined} config
 */
export function iceServersFor(identified, config) {
  if (identified && Array.isArray(identified.iceServers)) return cleanIceServers(identified.iceServers);
  return cleanIceServers(config?.iceServers);
}

/**
 * @typedef {object} ClientConfig
 * @property {string} wsUrl
 * @property {RTCIceServer[]} iceServers
 * @property {{maxParticipants: number, [key: string]: unknown}} limits
 */

/**
 * GET /config: {wsUrl, iceServers, limits}; falls back to this origin's /ws.
 *
 * @param {{signal?: AbortSignal}} [opts]
 * @returns {Promise<ClientConfig>}
 */
export async function getConfig({ signal } = {}) {
  const fallback = {
    wsUrl: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
    iceServers: [],
    limits: { maxParticipants: 16 },
  };
  const { status, data } = await request("GET", "/config", { signal });
  if (status !== 200) return fallback;
  // Behind a TLS-terminating proxy the server may not know it is reached over https.
  let wsUrl = typeof data.wsUrl === "string" ? data.wsUrl : fallback.wsUrl;
  if (location.protocol === "https:" && wsUrl.startsWith("ws://")) wsUrl = fallback.wsUrl;
  return {
    wsUrl,
    iceServers: cleanIceServers(data.iceServers),
    limits: { ...fallback.limits, ...(data.limits || {}) },
  };
}

/**
 * What the lobby shows before joining: GET /getRoomId. {exists: true, roomId, passwordRequired},
 * {exists: false} (nobody has opened this room: joining creates it), or null when the server
 * did not say (busy, unreachable): the lobby then offers a plain join.
 *
 * @typedef {{exists: true, roomId: number, passwordRequired: boolean} | {exists: false}} RoomInfo
 *
 * @param {string} urlPath
 * @param {{signal?: AbortSignal}} [opts]
 * @returns {Promise<RoomInfo | null>}
 */
export async function roomInfo(urlPath, { signal } = {}) {
  const r = await request("GET", lookupPath(urlPath), { signal });
  if (r.status === 200 && r.data.exists === false) return { exists: false };
  if (r.status === 200) {
    return { exists: true, roomId: Number(r.data.roomId ?? r.data.id), passwordRequired: r.data.passwordRequired === true };
  }
  if (r.status === 404) return { exists: false };
  return null;
}

/**
 * GET /getRoomId for `urlPath`, asking (`probe=1`) for a miss as `200 {"exists": false}`: a
 * 404 is what a miss is to a server that ignores the flag, and the browser reports every 404
 * in the console as an error, while a new room is nothing of the kind.
 *
 * @param {string} urlPath
 */
function lookupPath(urlPath) {
  return `/getRoomId?urlPath=${encodeURIComponent(urlPath)}&probe=1`;
}

/**
 * @typedef {object} ResolvedRoom
 * @property {number} roomId
 * @property {string} moderatorKey  "" unless this call bound the room
 */

/**
 * A claimRoom answer: the room id, and the moderator key when this call bound the room.
 *
 * @param {Record<string, any>} data
 * @returns {ResolvedRoom}
 */
function claimed(data) {
  const key = typeof data.moderatorKey === "string" && data.moderatorKey ? data.moderatorKey : "";
  return { roomId: Number(data.roomId), moderatorKey: key };
}

/**
 * claimRoom's 400: the password (1 to 128 characters) or the name.
 *
 * @param {string} urlPath
 * @param {Record<string, any>} data
 */
function claimRefused(urlPath, data) {
  if (/password/i.test(String(data.message))) {
    return new JoinError("That password cannot be used: it must be 1 to 128 characters.", { retryable: false });
  }
  return new JoinError(`"${urlPath}" is not a valid room name.`, { retryable: false });
}

/**
 * @typedef {object} ResolveOptions
 * @property {AbortSignal} [signal]
 * @property {(text: string) => void} [onStatus]  progress and retries, as sentences
 * @property {number} [attempts]
 * @property {string} [password]  protects the room if this join creates it
 * @property {boolean} [lookup]  false: claim at once (the lobby has just looked)
 */

/**
 * One pass of the join flow; returns {roomId, moderatorKey} or throws a JoinError.
 *
 * @param {string} urlPath
 * @param {ResolveOptions} opts
 * @returns {Promise<ResolvedRoom>}
 */
async function resolveOnce(urlPath, { signal, onStatus, password, lookup }) {
  let r;
  if (lookup) {
    r = await request("GET", lookupPath(urlPath), { signal });
    if (r.status === 200 && r.data.exists !== false) return { roomId: Number(r.data.roomId ?? r.data.id), moderatorKey: "" };
    if (r.status === 400) throw new JoinError(`"${urlPath}" is not a valid room name.`, { retryable: false });
    if (r.status !== 404 && r.status !== 200) {
      throw new JoinError(plainProblem(r), { detail: detailOf("GET /getRoomId", r) });
    }
  }
  // No ready room to claim (the idle pool is empty): start one first rather than be told so
  // with a 404, which the browser reports in the console as an error.
  if (await noReadyRoom(signal)) await startRoom(onStatus, signal);
  // The password protects the room only if this call binds it (claimRoom ignores it otherwise).
  const body = password ? { urlPath, password } : { urlPath };
  onStatus?.("Claiming the room…");
  r = await request("PATCH", "/claimRoom", { body, signal });
  if (r.status === 200) return claimed(r.data);
  if (r.status === 400) throw claimRefused(urlPath, r.data);
  if (r.status !== 404) throw new JoinError(plainProblem(r), { detail: detailOf("PATCH /claimRoom", r) });

  await startRoom(onStatus, signal);
  r = await request("PATCH", "/claimRoom", { body, signal });
  if (r.status === 200) return claimed(r.data);
  throw new JoinError("No room became free for this link.", { detail: detailOf("PATCH /claimRoom", r) });
}

/**
 * Whether the server has no ready room to claim (GET /health counts them); false when it
 * does not say.
 *
 * @param {AbortSignal | undefined} signal
 */
async function noReadyRoom(signal) {
  const r = await request("GET", "/health", { signal });
  const unclaimed = r.status === 200 ? r.data.rooms?.unclaimed : undefined;
  return typeof unclaimed === "number" && unclaimed <= 0;
}

/**
 * PUT /createRoom: one more ready room to claim.
 *
 * @param {((text: string) => void) | undefined} onStatus
 * @param {AbortSignal | undefined} signal
 */
async function startRoom(onStatus, signal) {
  onStatus?.("Starting a new room…");
  const r = await request("PUT", "/createRoom", { body: {}, signal, timeout: 20000 });
  if (r.status === 200) return;
  const full = r.status === 429 || r.data.reason === "room limit reached";
  throw new JoinError(
    full ? "The server could not start a room: it has no room free right now." : "The server could not start a room.",
    { detail: detailOf("PUT /createRoom", r) },
  );
}

/**
 * {roomId, moderatorKey} for `urlPath`, retrying transient failures with back-off.
 * `password` protects the room if this join creates it; `lookup: false` skips the first
 * getRoomId (the lobby has just been told the room does not exist: claimRoom is idempotent).
 *
 * @param {string} urlPath
 * @param {ResolveOptions} [opts]
 * @returns {Promise<ResolvedRoom>}
 */
export async function resolveRoom(urlPath, { signal, onStatus, attempts = 3, password = "", lookup = true } = {}) {
  let last;
  for (let attempt = 0; attempt < attempts; attempt++) {
    try {
      return await resolveOnce(urlPath, { signal, onStatus, password, lookup: lookup || attempt > 0 });
    } catch (err) {
      if (signal?.aborted || !(err instanceof JoinError) || !err.retryable) throw err;
      last = err;
      if (attempt + 1 < attempts) {
        const wait = backoff(attempt);
        onStatus?.(`${err.message} Retrying in ${Math.ceil(wait / 1000)} s…`);
        await sleep(wait, signal);
      }
    }
  }
  throw last; // the caller (join.js) keeps retrying with a longer back-off and says so
}
