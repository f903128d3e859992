// The wire formats the page speaks: protobuf's binary encoding of the one message it sends
// often (a StreamMatchRequest carrying a frame: the JPEG copied once, no base64), and the JSON
// mapping's base64 and raw images on the way back. Field numbers are featuremap.proto's
// (StreamMatchRequest.frame = 2; Frame.sequence = 1, capture_time = 2, image = 3;
// Timestamp.seconds = 1, nanos = 2; Image.encoded = 2); a test parses what this writes with
// the generated Python messages, so a renumbered proto fails it.

function varint(value) {
  // Plain arithmetic, not bit operators (which are 32-bit): sequences and seconds go past 2^31.
  const out = [];
  let rest = Math.floor(value);
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

function key(field, wireType) {
  return varint(field * 8 + wireType);
}

/**
 * A StreamMatchRequest with one frame, as protobuf bytes.
 * @param {number} sequence the frame's number, echoed in its result
 * @param {number} timeMs capture time, milliseconds since the epoch
 * @param {Uint8Array} image the encoded frame (JPEG)
 * @returns {Uint8Array}
 */
export function frameRequest(sequence, timeMs, image) {
  const seconds = Math.floor(timeMs / 1000);
  const nanos = Math.round((timeMs - seconds * 1000) * 1e6);
  const timestamp = [...key(1, 0), ...varint(seconds), ...(nanos ? [...key(2, 0), ...varint(nanos)] : [])];
  const imageHead = [...key(2, 2), ...varint(image.length)];
  const imageLength = imageHead.length + image.length;
  const frameHead = [...key(1, 0), ...varint(sequence), ...key(2, 2), ...varint(timestamp.length), ...timestamp,
                     ...key(3, 2), ...varint(imageLength)];
  const requestHead = [...key(2, 2), ...varint(frameHead.length + imageLength)];
  const out = new Uint8Array(requestHead.length + frameHead.length + imageLength);
  let at = 0;
  for (const part of [requestHead, frameHead, imageHead, image]) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Bytes from base64 (protobuf's JSON mapping of bytes fields). */
export function fromBase64(text) {
  const binary = atob(text || "");
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** base64url of a string, without padding (a token offered as a WebSocket subprotocol). */
export function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/**
 * A RawImage (JSON mapping) as ImageData: channels BGR(A) or gray, uint8 or float32.
 * @returns {ImageData | null} null for an encoded image (the server returns templates raw)
 */
export function rawImageData(raw) {
  if (!raw) return null;
  const { height, width } = raw;
  const channels = raw.channels || 1;
  const bytes = fromBase64(raw.data);
  let values = bytes;
  if (raw.dtype === "DATA_TYPE_FLOAT32") {
    const floats = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    let low = Infinity, high = -Infinity;
    for (const v of floats) { if (v < low) low = v; if (v > high) high = v; }
    const span = high > low ? high - low : 1;
    values = Uint8ClampedArray.from(floats, (v) => (255 * (v - low)) / span);
  }
  const out = new ImageData(width, height);
  for (let i = 0, p = 0; i < width * height; i++, p += channels) {
    const o = i * 4;
    if (channels >= 3) {
      out.data[o] = values[p + 2];
      out.data[o + 1] = values[p + 1];
      out.data[o + 2] = values[p];
    } else {
      out.data[o] = out.data[o + 1] = out.data[o + 2] = values[p];
    }
    out.data[o + 3] = channels === 4 ? values[p + 3] : 255;
  }
  return out;
}
