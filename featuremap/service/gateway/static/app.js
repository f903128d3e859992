// The live view: a source (the browser's camera, or a video file dropped on the page) streamed to
// the server, each result drawn on its frame (turned boxes, labels, track ids, heatmaps on
// demand), live numbers, and the bank beside it. While results come, the view shows each frame
// sent with its own result (what the server saw, boxes in place); otherwise the source as it
// plays. window.featuremapLive holds the result model: what was drawn for every answered frame,
// in frame pixels (the tests read it).
import { Api } from "./api.js";
import { BankView } from "./bank.js";
import { corners, drawBoxes, drawHeatmap, heatmapCanvas } from "./draw.js";
import { LiveStream } from "./stream.js";
import { Tracker } from "./tracker.js";

const $ = (id) => document.getElementById(id);
//: The longest side of a frame sent: larger frames are scaled down (the boxes scaled back).
const MAX_SIDE = 1280;
//: Results kept in the model.
const KEPT = 5000;

const api = new Api();
const stream = new LiveStream(api);
const tracker = new Tracker();
const bank = new BankView(api, {
  list: $("templates"), error: $("bank-error"), editor: $("editor"), crop: $("crop"), add: $("add"),
  cancel: $("cancel"), id: $("template-id"), name: $("template-name"), editorError: $("editor-error"),
});
const video = $("video");
const screen = $("screen");
const sent = new Map(); // sequence -> the frame sent (a canvas), until its result comes

const model = {
  drawn: [], // {sequence, latency, boxes: [{template, track, score, cx, cy, width, height, angle, visible, corners}]}
  latest: null, // the last result's boxes and heatmaps
  state: "idle",
  refused: null, // the last refusal for want of a token: {source: "api" | "stream", message}
  stats: stream.stats,
  source: null, // "camera" | "file" | null
  scale: 1, // frame sent = video frame * scale
};
window.featuremapLive = model;

function status(state, text) {
  model.state = state;
  const element = $("status");
  element.dataset.state = state;
  element.textContent = text;
}

// -- the token -------------------------------------------------------------------

function askToken(source, message) {
  model.refused = { source, message };
  $("token-form").hidden = false;
  $("token-error").textContent = message || "";
  status("needs-token", "The server refused the page without a token: enter one above.");
}

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  api.setToken($("token").value);
  $("token-form").hidden = true;
  await loadBank();
  if (model.source) stream.start();
});

function refused(error) {
  if (error && error.status === 401) {
    askToken("api", error.message);
    return true;
  }
  return false;
}

// -- the bank ------------------------------------------------------------------------

async function loadBank() {
  try {
    await bank.refresh();
    $("bank-error").textContent = "";
    if (model.state === "needs-token") status("idle", "Start the camera, or drop a video file on the view.");
  } catch (error) {
    if (!refused(error)) $("bank-error").textContent = `Could not list the templates: ${error.message}`;
  }
}

function config() {
  const topK = Math.max(1, Number($("top-k").value) || 1);
  const threshold = Number($("threshold").value);
  const settings = { templates: [], peaks: { topK } };
  if (Number.isFinite(threshold) && $("threshold").value !== "") {
    settings.peaks.threshold = threshold;
    // At the default, as the Python client: a plain template must also reach its own texture threshold.
    settings.peaks.templateThresholds = $("threshold").value === $("threshold").defaultValue;
  }
  if (bank.heatmaps.size) settings.maps = { encoding: "MAP_ENCODING_UINT8" };
  return settings;
}

function reconfigure() {
  // The server resolves a config's templates when it arrives: a changed bank needs a new config.
  stream.setConfig(config());
}

bank.addEventListener("change", reconfigure);
bank.addEventListener("heatmaps", reconfigure);
bank.addEventListener("failed", (event) => refused(event.detail));
$("top-k").addEventListener("change", reconfigure);
$("threshold").addEventListener("change", reconfigure);
$("refresh").addEventListener("click", loadBank);

// -- sources -----------------------------------------------------------------------------

async function useCamera() {
  try {
    const media = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    begin(media, null, "camera");
  } catch (error) {
    status("error", `No camera: ${error.message}` +
      (window.isSecureContext ? "" : " (browsers open cameras only on https:// or localhost)"));
  }
}

function useFile(file) {
  if (!file.type.startsWith("video/")) {
    status("error", `${file.name} is not a video: drop a video file here, or an image on the bank to add a template.`);
    return;
  }
  begin(null, URL.createObjectURL(file), "file");
}

function begin(media, url, kind) {
  end();
  model.source = kind;
  video.srcObject = media;
  if (url) {
    video.src = url;
    video.loop = true;
  }
  video.play().catch((error) => status("error", `Cannot play the source: ${error.message}`));
  $("stop").disabled = false;
  $("grab").disabled = false;
  stream.setConfig(config());
  stream.start();
  requestFrame();
}

function end() {
  if (video.srcObject) for (const track of video.srcObject.getTracks()) track.stop();
  if (video.src) URL.revokeObjectURL(video.src);
  video.removeAttribute("src");
  video.srcObject = null;
  model.source = null;
  $("stop").disabled = true;
  $("grab").disabled = true;
}

$("camera").addEventListener("click", useCamera);
$("video-file").addEventListener("change", (event) => event.target.files[0] && useFile(event.target.files[0]));
$("stop").addEventListener("click", () => {
  end();
  stream.stop();
});
$("grab").addEventListener("click", () => {
  if (video.videoWidth) bank.edit(frameCanvas(1));
});

// -- frames out, results in --------------------------------------------------------------

function frameCanvas(scale) {
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return canvas;
}

function requestFrame() {
  if (!model.source) return;
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);
  else requestAnimationFrame(onFrame);
}

function onFrame() {
  if (!model.source) return;
  if (video.videoWidth) {
    const scale = Math.min(1, MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
    model.scale = scale;
    if (stream.ready()) {
      const frame = document.createElement("canvas");
      frame.width = Math.round(video.videoWidth * scale);
      frame.height = Math.round(video.videoHeight * scale);
      frame.getContext("2d").drawImage(video, 0, 0, frame.width, frame.height);
      // Kept until its result comes: the view shows each frame with its own boxes, as the server saw it.
      stream.offer(frame).then((sequence) => sequence !== null && sent.set(sequence, frame));
    } else if (stream.open) {
      stream.stats.dropped += 1;
    }
    if (!stream.open) paint(video, null); // no results coming: the source as it is
  }
  requestFrame();
}

stream.addEventListener("result", (event) => {
  const { result, latency } = event.detail;
  const scale = model.scale;
  const peaks = (result.peaks || []).map((peak) => ({
    template: peak.template, score: peak.score, x: peak.x / scale, y: peak.y / scale,
    width: peak.width / scale, height: peak.height / scale, cx: peak.cx / scale, cy: peak.cy / scale,
    angle: peak.angle || 0, visible: peak.visible === undefined ? 1 : peak.visible,
  }));
  const tracks = tracker.update(peaks);
  const boxes = peaks.map((peak, i) => ({ ...peak, track: tracks[i], corners: corners(peak) }));
  const heatmaps = (result.maps || []).filter((map) => bank.heatmaps.has(map.template)).map((map) => ({
    map, canvas: heatmapCanvas(map), template: bank.byName(map.template) || {},
  }));
  model.latest = { boxes, heatmaps, scale };
  const sequence = Number(result.sequence);
  model.drawn.push({ sequence, latency, boxes });
  if (model.drawn.length > KEPT) model.drawn.splice(0, model.drawn.length - KEPT);
  const frame = sent.get(sequence);
  for (const key of [...sent.keys()]) if (key <= sequence) sent.delete(key); // answered, or skipped
  paint(frame || video, model.latest);
  showStats();
});

stream.addEventListener("state", (event) => {
  const { state, text } = event.detail;
  status(state, text);
});
stream.addEventListener("refused", (event) => {
  if (event.detail.code === 16) askToken("stream", event.detail.message);
});

/** A frame (the one a result is for, or the source itself) and, over it, a result's heatmaps and boxes. */
function paint(frame, latest) {
  const width = video.videoWidth || screen.width;
  const height = video.videoHeight || screen.height;
  if (screen.width !== width || screen.height !== height) {
    screen.width = width;
    screen.height = height;
  }
  const context = screen.getContext("2d");
  if (frame && (frame !== video || video.videoWidth)) context.drawImage(frame, 0, 0, width, height);
  if (!latest) return;
  for (const { map, canvas, template } of latest.heatmaps) drawHeatmap(context, canvas, map, template, 1 / latest.scale);
  drawBoxes(context, latest.boxes, Math.max(2, Math.round(width / 320)));
}

function showStats() {
  const latency = stream.latency();
  $("fps").textContent = stream.fps().toFixed(1);
  $("latency").textContent = Number.isFinite(latency) ? `${Math.round(latency)} ms` : "-";
  $("dropped").textContent = String(stream.stats.dropped);
  $("skipped").textContent = String(stream.stats.skipped);
  $("answered").textContent = String(stream.stats.answered);
}

// -- dropping files ------------------------------------------------------------------

function dropTarget(element, take) {
  element.addEventListener("dragover", (event) => {
    event.preventDefault();
    element.classList.add("over");
  });
  element.addEventListener("dragleave", () => element.classList.remove("over"));
  element.addEventListener("drop", (event) => {
    event.preventDefault();
    element.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) take(file);
  });
}

dropTarget($("stage"), (file) => (file.type.startsWith("image/") ? bank.edit(file) : useFile(file)));
dropTarget($("drop"), (file) => bank.edit(file));
$("image-file").addEventListener("change", (event) => event.target.files[0] && bank.edit(event.target.files[0]));

loadBank();
