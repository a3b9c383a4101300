// The /ws/chat client: one socket, reconnecting with backoff, JSON messages dispatched by `type`.
// The handshake carries the vai_token cookie; nothing secret goes into the URL.

export class ChatSocket extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.wanted = false;
    this.retry = 0;
    this.timer = null;
    this.maxBytes = 64 * 1024;
    this.pendingHistory = new Map(); // chat_id -> [resolve, ...]
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    this.wanted = true;
    if (this.ws) return;
    this.emit("status", { state: "connecting" });
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.retry = 0;
      this.emit("status", { state: "open" });
    });
    ws.addEventListener("message", (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (msg.type === "ready" && msg.max_message_bytes) this.maxBytes = msg.max_message_bytes;
      if (msg.type === "history") this.resolveHistory(msg.chat_id, msg);
      this.emit(msg.type, msg);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws === ws) this.ws = null;
      for (const chatId of [...this.pendingHistory.keys()]) this.resolveHistory(chatId, null);
      this.emit("status", { state: "closed", code: event.code, reason: event.reason });
      if (this.wanted) this.schedule();
    });
  }

  schedule() {
    clearTimeout(this.timer);
    const delay = Math.min(15000, 500 * 2 ** this.retry++);
    this.emit("status", { state: "waiting", delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  disconnect() {
    this.wanted = false;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
  }

  /** Send one message; returns an error text instead of sending when it cannot go. */
  send(message) {
    const text = JSON.stringify(message);
    if (new TextEncoder().encode(text).length > this.maxBytes) {
      return `That message is too long (the limit is ${Math.floor(this.maxBytes / 1024)} KiB).`;
    }
    if (!this.open) return "Not connected to memchat — reconnecting…";
    this.ws.send(text);
    return null;
  }

  /** The transcript of a conversation (null when it cannot be fetched). */
  history(namespace, chatId) {
    return new Promise((resolve) => {
      const waiting = this.pendingHistory.get(chatId) || [];
      waiting.push(resolve);
      this.pendingHistory.set(chatId, waiting);
      if (this.send({ type: "history", namespace, chat_id: chatId }) !== null) this.resolveHistory(chatId, null);
    });
  }

  resolveHistory(chatId, msg) {
    const waiting = this.pendingHistory.get(chatId);
    if (!waiting) return;
    this.pendingHistory.delete(chatId);
    for (const resolve of waiting) resolve(msg);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
