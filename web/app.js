// memchat demo page: sign-in, streaming chat over /ws/chat, refs, the namespace's memories, and the
// countdown to the next idle commit. Plain DOM; every text from the server is set with textContent.

import { api, ApiError } from "./api.js";
import { ChatSocket } from "./socket.js";

const $ = (id) => document.getElementById(id);
const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
};

const NS_KEY = "memchat.namespace";
const COMMIT_GRACE_MS = 20000; // a commit that finds nothing to remember sends no event

const state = {
  namespace: localStorage.getItem(NS_KEY) ?? "demo-user",
  chatId: null,
  phase: "idle", // idle | waiting (sent, no start yet) | streaming
  answer: null, // the assistant <li> being written
  selected: null, // the assistant <li> whose refs are shown
  pendingCommits: new Map(), // chat_id -> {deadline, namespace}
  flash: null, // {text, until}
  defaultCommitAfter: null,
};

const socket = new ChatSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/chat`);

// ---- sign-in -------------------------------------------------------------------------------------------

async function boot() {
  $("namespace").value = state.namespace;
  bindUi();
  bindSocket();
  setInterval(renderCommit, 250);
  try {
    const session = await api.session();
    if (session.signed_in) showApp(session.org_id);
    else showSignin();
  } catch {
    showSignin("memchat is not reachable.");
  }
}

function showSignin(message) {
  socket.disconnect();
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("org").hidden = true;
  $("signin").hidden = false;
  setText($("signin-error"), message);
  $("key").focus();
}

function showApp(orgId) {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("org").hidden = !orgId;
  $("org").textContent = orgId ? `org ${orgId}` : "";
  socket.connect();
  loadMemories();
  $("input").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  setText($("signin-error"), "");
  try {
    const session = await api.signIn(key);
    $("key").value = "";
    showApp(session.org_id);
  } catch (err) {
    setText($("signin-error"), err instanceof ApiError ? err.message : "memchat is not reachable.");
  }
}

async function signOut() {
  try {
    await api.signOut();
  } finally {
    resetConversation();
    state.pendingCommits.clear();
    showSignin();
  }
}

// ---- chat ----------------------------------------------------------------------------------------------

function bindUi() {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  $("stop").addEventListener("click", () => socket.send({ type: "stop" }));
  $("new-chat").addEventListener("click", () => {
    resetConversation();
    $("input").focus();
  });
  $("namespace").addEventListener("change", () => {
    state.namespace = $("namespace").value.trim();
    $("namespace").value = state.namespace;
    localStorage.setItem(NS_KEY, state.namespace);
    resetConversation();
    socket.send({ type: "subscribe", namespace: state.namespace });
    loadMemories();
  });
  $("memories-refresh").addEventListener("click", loadMemories);
  $("detail-close").addEventListener("click", () => ($("detail").hidden = true));
}

function sendMessage() {
  const content = $("input").value.trim();
  if (!content || state.phase !== "idle") return;
  const message = { type: "message", content, namespace: state.namespace };
  if (state.chatId) message.chat_id = state.chatId;
  const commitAfter = $("commit-after").value;
  if (commitAfter !== "") message.commit_after = Number(commitAfter);
  const problem = socket.send(message);
  if (problem) {
    showChatError(problem);
    return;
  }
  showChatError("");
  $("input").value = "";
  document.querySelector("#messages .welcome")?.remove();
  addMessage("user", content);
  state.answer = addMessage("assistant", "");
  state.answer.dataset.state = "waiting";
  setPhase("waiting");
}

function addMessage(role, text) {
  const item = el("li", `msg msg-${role}`);
  item.dataset.role = role;
  item.append(el("div", "msg-who", role === "user" ? "You" : "memchat"));
  item.append(el("div", "msg-text", text));
  if (role === "assistant") {
    const foot = el("div", "msg-foot");
    const chip = el("button", "chip", "retrieving memories…");
    chip.type = "button";
    chip.disabled = true;
    chip.addEventListener("click", () => selectAnswer(item));
    foot.append(chip, el("span", "msg-meta"));
    item.append(foot);
    item.refs = [];
  }
  $("messages").append(item);
  scrollChat();
  return item;
}

function setPhase(phase) {
  state.phase = phase;
  const busy = phase !== "idle";
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("namespace").disabled = busy;
  $("new-chat").disabled = busy;
}

function resetConversation() {
  state.chatId = null;
  state.answer = null;
  state.selected = null;
  $("chat-id").textContent = "new";
  $("messages").replaceChildren(el("li", "welcome muted", "New conversation. Earlier conversations stay in memory once committed."));
  renderRefs();
  $("detail").hidden = true;
  showChatError("");
}

function scrollChat() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function showChatError(text) {
  setText($("chat-error"), text);
}

function finishAnswer(answerState, note) {
  const answer = state.answer;
  if (answer) {
    answer.dataset.state = answerState;
    if (note) answer.append(el("div", "msg-error", note));
    const chip = answer.querySelector(".chip");
    if (chip.disabled && !answer.refs.length) chip.textContent = "no memories used";
  }
  state.answer = null;
  setPhase("idle");
  $("input").focus();
}

function bindSocket() {
  socket.addEventListener("status", ({ detail }) => {
    const pill = $("connection");
    const labels = { connecting: "connecting…", open: "connected", closed: "disconnected", waiting: "reconnecting…" };
    pill.textContent = labels[detail.state] || detail.state;
    pill.dataset.state = detail.state;
    if (detail.state === "closed") {
      if (state.phase !== "idle") finishAnswer("error", "The connection was lost before the answer finished.");
      if (detail.code === 1009) showChatError("memchat closed the connection: that message was too large.");
      api.session().then((s) => { if (!s.signed_in) showSignin("Your session has ended; sign in again."); }).catch(() => {});
    }
    if (detail.state === "open") socket.send({ type: "subscribe", namespace: state.namespace });
  });
  socket.addEventListener("ready", ({ detail }) => {
    state.defaultCommitAfter = detail.commit_after;
    $("commit-after").options[0].textContent = `server default (${formatSeconds(detail.commit_after)})`;
  });
  socket.addEventListener("start", ({ detail }) => {
    state.chatId = detail.chat_id;
    $("chat-id").textContent = detail.chat_id.slice(0, 8);
    $("chat-id").title = `chat_id ${detail.chat_id}`;
    if (state.answer) {
      state.answer.dataset.state = "streaming";
      state.answer.dataset.chatId = detail.chat_id;
    }
    setPhase("streaming");
  });
  socket.addEventListener("refs", ({ detail }) => {
    if (!state.answer) return;
    state.answer.refs = detail.refs || [];
    const chip = state.answer.querySelector(".chip");
    const n = state.answer.refs.length;
    chip.textContent = n ? `${n} ${n === 1 ? "memory" : "memories"} used` : "no memories used";
    chip.disabled = n === 0;
    selectAnswer(state.answer);
  });
  socket.addEventListener("token", ({ detail }) => {
    if (!state.answer) return;
    state.answer.querySelector(".msg-text").textContent += detail.token;
    scrollChat();
  });
  socket.addEventListener("error", ({ detail }) => {
    if (state.phase === "waiting" && !detail.chat_id) {
      finishAnswer("error", detail.message);
    } else if (state.answer) {
      state.answer.append(el("div", "msg-error", detail.message));
    } else {
      showChatError(detail.message);
    }
  });
  socket.addEventListener("done", ({ detail }) => {
    const answer = state.answer;
    if (answer && detail.usage) {
      answer.querySelector(".msg-meta").textContent = `${detail.usage.completion_tokens ?? "?"} tokens`;
    }
    if (detail.commit_after !== undefined) {
      state.pendingCommits.set(detail.chat_id, {
        deadline: Date.now() + detail.commit_after * 1000,
        namespace: state.namespace,
      });
    }
    const failed = answer && answer.querySelector(".msg-error");
    finishAnswer(detail.stopped ? "stopped" : failed ? "error" : "done", detail.stopped ? "Stopped." : null);
    renderCommit();
  });
  socket.addEventListener("memory_committed", ({ detail }) => {
    state.pendingCommits.delete(detail.chat_id);
    const n = detail.memories.length;
    state.flash = { text: `✓ ${n} ${n === 1 ? "memory" : "memories"} saved`, until: Date.now() + 8000 };
    renderCommit();
    if (detail.namespace === state.namespace) loadMemories();
  });
}

// ---- pending commit indicator ----------------------------------------------------------------------------

function renderCommit() {
  const pill = $("commit");
  const now = Date.now();
  let soonest = null;
  for (const [chatId, pending] of state.pendingCommits) {
    if (now > pending.deadline + COMMIT_GRACE_MS) {
      state.pendingCommits.delete(chatId); // committed nothing worth remembering (or elsewhere)
      if (pending.namespace === state.namespace) loadMemories();
      continue;
    }
    if (soonest === null || pending.deadline < soonest) soonest = pending.deadline;
  }
  let text = "";
  let kind = "";
  if (soonest !== null) {
    const left = Math.ceil((soonest - now) / 1000);
    const count = state.pendingCommits.size;
    const prefix = count > 1 ? `${count} conversations · ` : "";
    text = left > 0 ? `${prefix}memory commit in ${formatSeconds(left)}` : `${prefix}committing to memory…`;
    kind = "pending";
  } else if (state.flash && now < state.flash.until) {
    text = state.flash.text;
    kind = "saved";
  }
  pill.hidden = !text;
  if (pill.textContent !== text) pill.textContent = text;
  pill.dataset.kind = kind;
  pill.title = soonest !== null ? "Idle conversations are committed to long-term memory after commit_after seconds" : "";
}

function formatSeconds(total) {
  if (total < 60) return `${total} s`;
  const m = Math.floor(total / 60);
  const s = total % 60;
  return s ? `${m} min ${s} s` : `${m} min`;
}

// ---- refs and memory details ---------------------------------------------------------------------------

function selectAnswer(answer) {
  document.querySelectorAll("#messages .msg.selected").forEach((n) => n.classList.remove("selected"));
  state.selected = answer;
  answer.classList.add("selected");
  renderRefs();
}

function renderRefs() {
  const list = $("ref-list");
  const answer = state.selected;
  list.replaceChildren();
  if (!answer) {
    setText($("refs-hint"), "Select an answer to see which memories informed it.");
    return;
  }
  if (!answer.refs.length) {
    setText($("refs-hint"), "No memories informed this answer.");
    return;
  }
  setText($("refs-hint"), "These memories were given to the model for the selected answer. Click one to see where it came from.");
  for (const ref of answer.refs) {
    const item = el("li", "ref");
    const button = el("button", "ref-button");
    button.type = "button";
    button.append(el("span", "ref-content", ref.content));
    const meta = [`score ${Number(ref.score).toFixed(2)}`, formatDate(ref.createdAt), ref.source].filter(Boolean);
    button.append(el("span", "ref-meta", meta.join(" · ")));
    button.addEventListener("click", () => showDetail(ref.id, ref));
    item.append(button);
    list.append(item);
  }
}

async function showDetail(memoryId, fallback) {
  const namespace = state.namespace;
  const box = $("detail-memory");
  const transcript = $("detail-transcript");
  $("detail").hidden = false;
  box.replaceChildren(el("p", "muted", "Loading…"));
  transcript.replaceChildren();
  let memory = fallback || null;
  try {
    memory = await api.memory(namespace, memoryId);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) {
      box.replaceChildren(el("p", "muted", `Could not load this memory: ${err.message}`));
      return;
    }
    memory = fallback ? { ...fallback, state: "deleted" } : null;
  }
  if (!memory) {
    box.replaceChildren(el("p", "muted", "This memory no longer exists."));
    return;
  }
  const card = el("div", "memory-card");
  card.append(el("p", "memory-content", memory.content));
  const facts = el("dl", "facts");
  const addFact = (name, value) => {
    if (!value) return;
    facts.append(el("dt", null, name), el("dd", null, value));
  };
  addFact("Recorded", formatDate(memory.createdAt));
  addFact("Source", memory.source);
  addFact("State", memory.state);
  addFact("Id", memory.id);
  card.append(facts);
  box.replaceChildren(card);
  if (!memory.sourceThreadId) {
    transcript.replaceChildren(el("li", "muted", "Added directly through the memory API, not from a conversation."));
    return;
  }
  transcript.replaceChildren(el("li", "muted", "Loading the conversation…"));
  const history = await socket.history(namespace, memory.sourceThreadId);
  if (!history || !history.turns.length) {
    transcript.replaceChildren(el("li", "muted", "The source conversation is not available."));
    return;
  }
  transcript.replaceChildren();
  for (const turn of history.turns) {
    const item = el("li", "turn");
    if (turn.turn_id === memory.sourceTurnId) item.classList.add("source-turn");
    item.append(el("div", "turn-user", turn.user));
    if (turn.assistant) item.append(el("div", "turn-assistant", turn.assistant));
    item.append(el("div", "turn-meta", formatDate(turn.created_at)));
    transcript.append(item);
  }
  transcript.querySelector(".source-turn")?.scrollIntoView({ block: "nearest" });
}

// ---- the namespace's memories ----------------------------------------------------------------------------

let memoriesRequest = 0;

async function loadMemories() {
  const namespace = state.namespace;
  const request = ++memoriesRequest;
  $("memories-ns").textContent = namespace || "(global)";
  let data;
  try {
    data = await api.memories(namespace);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) showSignin("Your session has ended; sign in again.");
    return;
  }
  if (request !== memoriesRequest) return; // a newer load (or namespace) won
  const list = $("memory-list");
  list.replaceChildren();
  for (const memory of data.memories) list.append(memoryItem(memory));
  $("memory-count").textContent = String(data.total ?? data.memories.length);
  $("memories-empty").hidden = data.memories.length > 0;
}

function memoryItem(memory) {
  const item = el("li", "memory");
  item.dataset.id = memory.id;
  if (memory.state && memory.state !== "current") item.classList.add("inactive");
  const open = el("button", "memory-open");
  open.type = "button";
  open.append(el("span", "memory-content", memory.content));
  const meta = [formatDate(memory.createdAt), memory.source, memory.state !== "current" ? memory.state : null];
  open.append(el("span", "memory-meta", meta.filter(Boolean).join(" · ")));
  open.addEventListener("click", () => showDetail(memory.id, memory));
  const remove = el("button", "btn btn-ghost btn-small memory-delete", "Delete");
  remove.type = "button";
  remove.setAttribute("aria-label", `Delete memory: ${memory.content.slice(0, 60)}`);
  remove.addEventListener("click", async () => {
    remove.disabled = true;
    try {
      await api.deleteMemory(state.namespace, memory.id);
      item.remove();
      const count = $("memory-list").children.length;
      $("memory-count").textContent = String(Math.max(0, Number($("memory-count").textContent) - 1));
      $("memories-empty").hidden = count > 0;
    } catch (err) {
      remove.disabled = false;
      showChatError(err.message);
    }
  });
  item.append(open, remove);
  return item;
}

// ---- helpers ---------------------------------------------------------------------------------------------

function setText(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}

function formatDate(value) {
  if (!value) return "";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return value;
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

boot();
