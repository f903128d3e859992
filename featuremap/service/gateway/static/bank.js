// The bank: its templates with thumbnails, heatmap switches and delete buttons; and the editor
// that adds one from an image (dropped, chosen, or the view's current frame) and a box drawn on it.
import { rawImageData } from "./wire.js";

const THUMBNAIL = 64;

export class BankView extends EventTarget {
  constructor(api, elements) {
    super();
    this.api = api;
    this.el = elements;
    this.templates = []; // as listed (TEMPLATE_VIEW_BASIC)
    this.heatmaps = new Set(); // template names whose heatmap is shown
    this.thumbnails = new Map(); // name -> {etag, image: ImageData}
    this.source = null; // the editor's image (a canvas)
    this.box = null; // the drawn box in the image's pixels: {x, y, width, height}
    this.editorEvents();
  }

  /** Reload the list (and the thumbnails not yet fetched). Throws the ApiError of a refusal. */
  async refresh() {
    this.templates = await this.api.listTemplates();
    const names = new Set(this.templates.map((t) => t.name));
    for (const name of [...this.heatmaps]) if (!names.has(name)) this.heatmaps.delete(name);
    this.render();
    await Promise.all(this.templates.map((template) => this.thumbnail(template)));
    this.dispatchEvent(new CustomEvent("change"));
  }

  byName(name) {
    return this.templates.find((t) => t.name === name);
  }

  render() {
    const list = this.el.list;
    list.replaceChildren();
    for (const template of this.templates) {
      const item = document.createElement("li");
      item.dataset.name = template.name;
      const canvas = document.createElement("canvas");
      canvas.width = THUMBNAIL;
      canvas.height = THUMBNAIL;
      const text = document.createElement("div");
      const name = document.createElement("div");
      name.className = "name";
      name.textContent = template.displayName || template.name.replace(/^templates\//, "");
      const meta = document.createElement("div");
      meta.className = "meta";
      meta.textContent = `${template.name} · ${template.width}×${template.height}`;
      text.append(name, meta);
      const actions = document.createElement("div");
      actions.className = "actions";
      const heat = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.className = "heatmap";
      box.checked = this.heatmaps.has(template.name);
      box.addEventListener("change", () => {
        if (box.checked) this.heatmaps.add(template.name);
        else this.heatmaps.delete(template.name);
        this.dispatchEvent(new CustomEvent("heatmaps"));
      });
      heat.append(box, " heatmap");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "delete";
      remove.textContent = "Delete";
      remove.addEventListener("click", () => this.remove(template.name));
      actions.append(heat, remove);
      item.append(canvas, text, actions);
      list.append(item);
      const known = this.thumbnails.get(template.name);
      if (known && known.etag === template.etag) this.paint(canvas, known.image);
    }
  }

  async thumbnail(template) {
    const known = this.thumbnails.get(template.name);
    if (!known || known.etag !== template.etag) {
      const full = await this.api.getTemplate(template.name);
      const image = full && full.image ? rawImageData(full.image.raw) : null;
      if (!image) return;
      this.thumbnails.set(template.name, { etag: template.etag, image });
    }
    const canvas = this.el.list.querySelector(`li[data-name="${CSS.escape(template.name)}"] canvas`);
    if (canvas) this.paint(canvas, this.thumbnails.get(template.name).image);
  }

  paint(canvas, image) {
    const full = document.createElement("canvas");
    full.width = image.width;
    full.height = image.height;
    full.getContext("2d").putImageData(image, 0, 0);
    const scale = Math.min(THUMBNAIL / image.width, THUMBNAIL / image.height);
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, THUMBNAIL, THUMBNAIL);
    context.imageSmoothingEnabled = scale < 1;
    const w = image.width * scale;
    const h = image.height * scale;
    context.drawImage(full, (THUMBNAIL - w) / 2, (THUMBNAIL - h) / 2, w, h);
  }

  async remove(name) {
    try {
      await this.api.deleteTemplate(name);
      this.el.error.textContent = "";
      await this.refresh();
    } catch (error) {
      this.el.error.textContent = `Could not delete ${name}: ${error.message}`;
      this.dispatchEvent(new CustomEvent("failed", { detail: error }));
    }
  }

  // -- the editor -------------------------------------------------------------

  /** Open the editor on an image: a File/Blob, or a canvas (the view's frame). */
  async edit(image) {
    const canvas = this.el.crop;
    let bitmap = image;
    if (image instanceof Blob) {
      try {
        bitmap = await createImageBitmap(image);
      } catch {
        this.el.editorError.textContent = "That file is not an image this browser can read.";
        this.el.editor.hidden = false;
        return;
      }
    }
    this.source = document.createElement("canvas");
    this.source.width = bitmap.width;
    this.source.height = bitmap.height;
    this.source.getContext("2d").drawImage(bitmap, 0, 0);
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    this.box = null;
    this.el.add.disabled = true;
    this.el.editorError.textContent = "";
    this.el.editor.hidden = false;
    this.drawEditor();
  }

  drawEditor() {
    const context = this.el.crop.getContext("2d");
    context.drawImage(this.source, 0, 0);
    if (this.box) {
      const { x, y, width, height } = this.box;
      context.save();
      context.fillStyle = "rgba(0, 0, 0, 0.45)";
      context.fillRect(0, 0, this.source.width, y);
      context.fillRect(0, y + height, this.source.width, this.source.height - y - height);
      context.fillRect(0, y, x, height);
      context.fillRect(x + width, y, this.source.width - x - width, height);
      context.strokeStyle = "#ffc53d";
      context.lineWidth = Math.max(1, this.source.width / 400);
      context.strokeRect(x + 0.5, y + 0.5, width - 1, height - 1);
      context.restore();
    }
  }

  /** A pointer's position on the editor's canvas, in the image's pixels. */
  pixel(event) {
    const rect = this.el.crop.getBoundingClientRect();
    const x = ((event.clientX - rect.left) * this.el.crop.width) / rect.width;
    const y = ((event.clientY - rect.top) * this.el.crop.height) / rect.height;
    return [Math.max(0, Math.min(this.el.crop.width, x)), Math.max(0, Math.min(this.el.crop.height, y))];
  }

  editorEvents() {
    const canvas = this.el.crop;
    let start = null;
    canvas.addEventListener("pointerdown", (event) => {
      if (!this.source) return;
      start = this.pixel(event);
      canvas.setPointerCapture(event.pointerId);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!start) return;
      const [x, y] = this.pixel(event);
      const left = Math.round(Math.min(start[0], x));
      const top = Math.round(Math.min(start[1], y));
      this.box = { x: left, y: top, width: Math.round(Math.max(start[0], x)) - left,
                   height: Math.round(Math.max(start[1], y)) - top };
      this.drawEditor();
    });
    canvas.addEventListener("pointerup", () => {
      start = null;
      this.el.add.disabled = !(this.box && this.box.width >= 4 && this.box.height >= 4);
    });
    this.el.editor.addEventListener("submit", (event) => {
      event.preventDefault();
      this.add();
    });
    this.el.cancel.addEventListener("click", () => this.closeEditor());
  }

  closeEditor() {
    this.el.editor.hidden = true;
    this.source = null;
    this.box = null;
  }

  async add() {
    if (!this.source || !this.box) return;
    const { x, y, width, height } = this.box;
    const crop = document.createElement("canvas");
    crop.width = width;
    crop.height = height;
    crop.getContext("2d").drawImage(this.source, x, y, width, height, 0, 0, width, height);
    const blob = await new Promise((resolve) => crop.toBlob(resolve, "image/png"));
    this.el.add.disabled = true;
    try {
      const created = await this.api.createTemplate(blob, {
        id: this.el.id.value.trim(), displayName: this.el.name.value.trim() });
      this.closeEditor();
      this.el.id.value = "";
      this.el.name.value = "";
      this.dispatchEvent(new CustomEvent("added", { detail: created }));
      await this.refresh();
    } catch (error) {
      this.el.add.disabled = false;
      this.el.editorError.textContent = `Not added: ${error.message}`;
      this.dispatchEvent(new CustomEvent("failed", { detail: error }));
    }
  }
}
