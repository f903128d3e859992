// Drawing on the view: turned boxes with labels, and feature maps as heatmaps.
import { fromBase64 } from "./wire.js";

const PALETTE = ["#ff4d4f", "#36cfc9", "#ffc53d", "#9254de", "#73d13d", "#40a9ff", "#f759ab", "#ff9c6e"];

/** A colour per template, the same on every frame. */
export function colourOf(template) {
  let hash = 0;
  for (const c of template) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

/**
 * A peak's box corners in frame pixels: the scaled template's box (width x height) turned by angle
 * (degrees, counter-clockwise as displayed) about its centre (cx, cy), as render.draw_peaks draws it.
 */
export function corners(peak) {
  const turn = (-(peak.angle || 0) * Math.PI) / 180; // y grows down: counter-clockwise on screen
  const cos = Math.cos(turn);
  const sin = Math.sin(turn);
  const w = peak.width / 2;
  const h = peak.height / 2;
  return [[-w, -h], [w, -h], [w, h], [-w, h]].map(([dx, dy]) => [
    peak.cx + dx * cos - dy * sin,
    peak.cy + dx * sin + dy * cos,
  ]);
}

/** Boxes with their labels (template, track id, score) on a 2D context in frame pixels. */
export function drawBoxes(context, boxes, lineWidth) {
  context.save();
  context.lineWidth = lineWidth;
  context.font = `${Math.max(11, Math.round(lineWidth * 6))}px system-ui, sans-serif`;
  context.textBaseline = "top";
  for (const box of boxes) {
    const colour = colourOf(box.template);
    context.strokeStyle = colour;
    context.setLineDash(box.visible < 1 ? [4 * lineWidth, 4 * lineWidth] : []);
    context.beginPath();
    box.corners.forEach(([x, y], i) => (i ? context.lineTo(x, y) : context.moveTo(x, y)));
    context.closePath();
    context.stroke();
    const label = `${box.template.replace(/^templates\//, "")} #${box.track} ${box.score.toFixed(2)}`;
    const top = Math.min(...box.corners.map((c) => c[1]));
    const left = Math.min(...box.corners.map((c) => c[0]));
    const width = context.measureText(label).width + 6;
    const height = Math.max(11, Math.round(lineWidth * 6)) + 4;
    const y = top - height >= 0 ? top - height : top;
    context.setLineDash([]);
    context.fillStyle = colour;
    context.fillRect(left, y, width, height);
    context.fillStyle = "#000";
    context.fillText(label, left + 3, y + 2);
  }
  context.restore();
}

// A "hot" colour ramp: black, red, yellow, white (hot = best match).
const RAMP = Array.from({ length: 256 }, (_, v) => [
  Math.min(255, v * 3),
  Math.min(255, Math.max(0, v * 3 - 255)),
  Math.min(255, Math.max(0, v * 3 - 510)),
]);

/**
 * A FeatureMap (JSON mapping) as a canvas: UINT8 values span the map's range (255 its maximum),
 * so the hottest pixel is the best match (the sqdiff methods' lowest: pass lowerIsBetter).
 */
export function heatmapCanvas(map, lowerIsBetter = false) {
  const values = fromBase64(map.data);
  const canvas = document.createElement("canvas");
  canvas.width = map.width;
  canvas.height = map.height;
  const image = new ImageData(map.width, map.height);
  for (let i = 0; i < map.width * map.height; i++) {
    const v = lowerIsBetter ? 255 - values[i] : values[i];
    const [r, g, b] = RAMP[v];
    image.data.set([r, g, b, (230 * v * v) / (255 * 255)], i * 4); // the weak matches fade out
  }
  canvas.getContext("2d").putImageData(image, 0, 0);
  return canvas;
}

/**
 * A heatmap where its windows are: map pixel (i, j) scores the window whose top-left corner is at
 * (originX + j stride, originY + i stride); drawn at the windows' centres (half the window on: the
 * map's windowWidth x windowHeight, a pose's turned template's canvas; the template's own size from
 * a server that does not send them).
 */
export function drawHeatmap(context, heat, map, template, scale = 1) {
  const stride = map.stride || 1;
  const x = ((map.originX || 0) + (map.windowWidth || template.width || 0) / 2 - stride / 2) * scale;
  const y = ((map.originY || 0) + (map.windowHeight || template.height || 0) / 2 - stride / 2) * scale;
  context.save();
  context.globalAlpha = 0.6;
  context.imageSmoothingEnabled = stride > 1;
  context.drawImage(heat, x, y, map.width * stride * scale, map.height * stride * scale);
  context.restore();
}
