// Track ids, as the Python client's Tracker gives them (featuremap.client.tracking): a detection
// keeps the id of its template's track whose last box it overlaps with IoU >= 0.3 (strongest
// detection first); a track unseen for 5 frames ends.
export const MIN_IOU = 0.3;
export const MAX_UNSEEN = 5;

export function iou(a, b) {
  const width = Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x);
  const height = Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y);
  if (width <= 0 || height <= 0) return 0;
  const inter = width * height;
  return inter / (a.width * a.height + b.width * b.height - inter);
}

export class Tracker {
  constructor() {
    this.tracks = new Map(); // template -> [{id, box, unseen}]
    this.next = 1;
  }

  /** Track ids for a frame's peaks, in their order. */
  update(peaks, lowerIsBetter = false) {
    const order = peaks.map((_, i) => i).sort((i, j) => (lowerIsBetter ? 1 : -1) * (peaks[i].score - peaks[j].score));
    const ids = new Array(peaks.length);
    const seen = new Set();
    for (const i of order) {
      const peak = peaks[i];
      const box = { x: peak.x, y: peak.y, width: peak.width, height: peak.height };
      if (!this.tracks.has(peak.template)) this.tracks.set(peak.template, []);
      const tracks = this.tracks.get(peak.template);
      let best = null;
      let overlap = MIN_IOU;
      for (const track of tracks) {
        const score = seen.has(track.id) ? 0 : iou(track.box, box);
        if (score >= overlap) {
          best = track;
          overlap = score;
        }
      }
      if (best === null) {
        best = { id: this.next++, box, unseen: 0 };
        tracks.push(best);
      }
      best.box = box;
      best.unseen = 0;
      seen.add(best.id);
      ids[i] = best.id;
    }
    for (const [template, tracks] of this.tracks) {
      for (const track of tracks) if (!seen.has(track.id)) track.unseen += 1;
      this.tracks.set(template, tracks.filter((t) => t.unseen <= MAX_UNSEEN));
    }
    return ids;
  }
}
