// The gateway's REST calls (the proto's HTTP rules) and the token they carry.
import { base64url } from "./wire.js";

const TOKEN_KEY = "featuremap.token";

/** A call the server refused: its HTTP status and the gRPC status it stands for ({code, message, details}). */
export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && typeof body.code === "number" ? body.code : 0;
  }

  /** The server wants a token (401), or this one lacks the scope (403). */
  get needsToken() {
    return this.status === 401;
  }
}

export class Api {
  constructor() {
    // Kept for this tab only: a token is a credential.
    this.token = sessionStorage.getItem(TOKEN_KEY) || "";
  }

  setToken(token) {
    this.token = token.trim();
    if (this.token) sessionStorage.setItem(TOKEN_KEY, this.token);
    else sessionStorage.removeItem(TOKEN_KEY);
  }

  async call(method, path, { body, type } = {}) {
    const headers = {};
    if (type) headers["Content-Type"] = type;
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const response = await fetch(path, { method, headers, body });
    const text = await response.text();
    let value = {};
    try {
      value = text ? JSON.parse(text) : {};
    } catch {
      value = { message: text.slice(0, 200) };
    }
    if (!response.ok) throw new ApiError(response.status, value);
    return value;
  }

  /** Every template of the bank (all pages, without pixels). */
  async listTemplates() {
    const found = [];
    let token = "";
    do {
      const query = new URLSearchParams({ pageSize: "200" });
      if (token) query.set("pageToken", token);
      const page = await this.call("GET", `/v1/templates?${query}`);
      found.push(...(page.templates || []));
      token = page.nextPageToken || "";
    } while (token);
    return found;
  }

  async getTemplate(name) {
    return (await this.call("GET", `/v1/${name}`)).template;
  }

  /** CreateTemplate from an image file (a multipart form, as curl -F sends it). */
  async createTemplate(blob, { id = "", displayName = "" } = {}) {
    const form = new FormData();
    form.append("image", blob, "template.png");
    if (id) form.append("templateId", id);
    if (displayName) form.append("displayName", displayName);
    return (await this.call("POST", "/v1/templates", { body: form })).template;
  }

  async deleteTemplate(name) {
    await this.call("DELETE", `/v1/${name}`);
  }

  /** The WebSocket's subprotocols: a browser cannot set Authorization there, so the token goes as one. */
  socketProtocols() {
    return this.token ? ["featuremap.v1", `bearer.${base64url(this.token)}`] : ["featuremap.v1"];
  }
}
