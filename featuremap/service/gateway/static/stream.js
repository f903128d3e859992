// StreamMatch over the gateway's WebSocket: frames one way (binary protobuf), results the other
// (JSON), with StreamMatch's realtime rule on both ends. The server, with realtime set, keeps
// only the newest pending frame and reports the ones it replaced as skipped; the page sends a
// frame only while fewer than WINDOW are unanswered and the socket's buffer is empty, and drops
// the camera's other frames (counted): nothing queues anywhere. A lost connection is retried
// with backoff (0.5 s doubling to 4 s) for as long as the stream is wanted.
import { frameRequest } from "./wire.js";

export const WINDOW = 2;
const RETRY_FIRST = 500;
const RETRY_MOST = 4000;
// gRPC codes the page treats apart: 16 UNAUTHENTICATED, 7 PERMISSION_DENIED.
const UNAUTHENTICATED = 16;
const PERMISSION_DENIED = 7;
const UNAVAILABLE = 14;

export class LiveStream extends EventTarget {
  constructor(api) {
    super();
    this.api = api;
    this.socket = null;
    this.wanted = false;
    this.retry = RETRY_FIRST;
    this.timer = 0;
    this.config = { realtime: true };
    this.sequence = 0;
    this.unanswered = 0;
    this.encoding = false;
    this.lastError = null;
    this.stats = { sent: 0, answered: 0, dropped: 0, skipped: 0, latencies: [], arrivals: [] };
  }

  get open() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  /** Keep a stream open (reconnecting when it drops) until stop(). */
  start() {
    this.wanted = true;
    if (!this.socket) this.connect();
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "stopped");
    this.socket = null;
    this.state("idle", "Stopped.");
  }

  state(name, text) {
    this.dispatchEvent(new CustomEvent("state", { detail: { state: name, text } }));
  }

  connect() {
    clearTimeout(this.timer);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/v1/frames:stream`, this.api.socketProtocols());
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.lastError = null;
    this.state("connecting", "Connecting to the server…");
    socket.onopen = () => {
      this.retry = RETRY_FIRST;
      this.unanswered = 0;
      this.sendConfig();
      this.state("streaming", "Streaming.");
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.error) this.lastError = message.error;
      else if (message.result) this.answered(message.result);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (!this.wanted) return;
      const error = this.lastError;
      if (error && (error.code === UNAUTHENTICATED || error.code === PERMISSION_DENIED)) {
        this.wanted = false;
        this.state("needs-token", `The server refused the stream: ${error.message}`);
        this.dispatchEvent(new CustomEvent("refused", { detail: error }));
        return;
      }
      const wait = this.retry;
      this.retry = Math.min(this.retry * 2, RETRY_MOST);
      const again = `${(wait / 1000).toFixed(1)} s`;
      if (error && error.code !== UNAVAILABLE) {
        // The server ended the stream for a reason of its own (an empty bank, a limit): said, and tried again.
        this.state("error", `The server ended the stream: ${error.message}. Trying again in ${again}…`);
      } else {
        const why = error ? error.message : event.reason || (event.code === 1006 ? "the connection dropped" : `code ${event.code}`);
        this.state("lost", `Lost the server (${why}): reconnecting in ${again}…`);
      }
      this.timer = setTimeout(() => this.connect(), wait);
    };
  }

  setConfig(config) {
    this.config = { ...config, realtime: true };
    this.sendConfig();
    // Waiting to retry (an empty bank, say) while the settings changed: try now.
    if (this.wanted && !this.socket) this.connect();
  }

  sendConfig() {
    if (this.open) this.socket.send(JSON.stringify({ config: this.config }));
  }

  /** Whether a frame may go now (else the caller drops it: the server is still busy with older ones). */
  ready() {
    return this.open && !this.encoding && this.unanswered < WINDOW && this.socket.bufferedAmount === 0;
  }

  /**
   * Send a frame (a canvas holding it), or count it dropped when not ready.
   * @returns {Promise<number|null>} its sequence, or null if it was not sent
   */
  async offer(canvas) {
    if (!this.open) return null;
    if (!this.ready()) {
      this.stats.dropped += 1;
      return null;
    }
    this.encoding = true;
    try {
      const captured = Date.now();
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
      if (!blob || !this.open) return null;
      const sequence = ++this.sequence;
      this.socket.send(frameRequest(sequence, captured, new Uint8Array(await blob.arrayBuffer())));
      this.unanswered += 1;
      this.stats.sent += 1;
      return sequence;
    } finally {
      this.encoding = false;
    }
  }

  answered(result) {
    const now = Date.now();
    const skipped = (result.skippedSequences || []).length;
    this.unanswered = Math.max(0, this.unanswered - 1 - skipped);
    this.stats.answered += 1;
    this.stats.skipped += skipped;
    const captured = Date.parse(result.captureTime || "");
    const latency = Number.isFinite(captured) ? now - captured : NaN;
    if (Number.isFinite(latency)) this.stats.latencies.push(latency);
    if (this.stats.latencies.length > 60) this.stats.latencies.shift();
    this.stats.arrivals.push(now);
    while (this.stats.arrivals.length && now - this.stats.arrivals[0] > 2000) this.stats.arrivals.shift();
    this.dispatchEvent(new CustomEvent("result", { detail: { result, latency } }));
  }

  /** Results a second over the last two seconds. */
  fps() {
    const arrivals = this.stats.arrivals;
    if (arrivals.length < 2) return 0;
    return ((arrivals.length - 1) * 1000) / Math.max(1, arrivals[arrivals.length - 1] - arrivals[0]);
  }

  /** The median latency of the last results, capture to answer, in milliseconds. */
  latency() {
    const sorted = [...this.stats.latencies].sort((a, b) => a - b);
    return sorted.length ? sorted[Math.floor(sorted.length / 2)] : NaN;
  }
}
