// Parley's browser chat. Plain JavaScript, no build step; every text from
// the network is rendered with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const els = {
  messages: $("messages"), input: $("input"), send: $("send"), status: $("status"), title: $("title"),
  rooms: $("rooms"), dms: $("dms"), members: $("member-list"), count: $("count"), typing: $("typing"),
  jump: $("jump"), nick: $("nick"), join: $("join"), nav: $("nav"), aside: $("members"),
};

const MAX_LINES = 500; // per conversation, trimmed when its reader is at the bottom
const MAX_SCROLLBACK = 5000; // while its reader is scrolled up (their place is not taken from under them)
const state = {
  ws: null,
  retry: 0,
  me: "",
  defaultRoom: "lobby",
  wantNick: localStorage.getItem("parley.nick") || "",
  current: "room:lobby",
  // Messages said and not yet seen coming back, by id: said again (same
  // id, so the server drops a copy it has) after a reconnect.
  pending: new Map(),
  // DMs sent and not yet answered, by id: their text comes back to the
  // box if the server refuses them.
  dmPending: new Map(),
  // key "room:<name>" or "dm:<nick>" -> conversation
  convs: new Map(),
  // Requests wait here for the rate limit the server announced, rather
  // than be refused (and lost) when typed faster than it allows.
  outbox: [],
  bucket: { tokens: 20, last: Date.now(), rate: 10, burst: 20 },
  maxBytes: 2000,
  // Who this client is, as room messages say it: a signed-in user's id,
  // or a guest connection's sender id. "Own" lines are by these, never by
  // nick (a nick can pass to someone else).
  user: "",
  sid: "",
  nickSince: 0, // when this client took its nick: older mentions of it were someone else's
  replyTo: null, // {seq, from, text}: the message the composer answers
  editing: 0, // the seq of our message the composer edits
};

// own reports whether a room line (or event) is this client's.
function own(line) {
  if (line.user) return line.user === state.user;
  return !!line.sid && line.sid === state.sid;
}

function conv(key) {
  let c = state.convs.get(key);
  if (!c) {
    // epoch: the room log's; lastSeq counts within it.
    c = { key, lines: [], lastSeq: 0, epoch: 0, unread: 0, members: new Map(), count: 0, truncated: false, typing: new Map(), joined: false, resend: false };
    state.convs.set(key, c);
  }
  return c;
}

// ---- rendering -------------------------------------------------------------

function time(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function lineElement(line) {
  const li = document.createElement("li");
  if (line.kind === "msg") {
    const mine = line.seq ? own(line) : line.from === state.me; // DMs carry no sender id
    if (mine) li.className = "own";
    if (line.seq) li.dataset.seq = line.seq;
    const meta = document.createElement("time");
    meta.className = "meta";
    meta.textContent = time(line.ts);
    const from = document.createElement("span");
    from.className = "from";
    from.textContent = line.from;
    // Spaces between the parts, so that copied or read out they do not
    // run together ("10:24 PM alice hello", not "10:24 PMalicehello").
    meta.setAttribute("datetime", new Date(line.ts).toISOString());
    const text = document.createElement("span");
    text.className = "text";
    text.dir = "auto"; // an Arabic or Hebrew line reads right to left
    if (line.deleted) {
      text.textContent = "message deleted";
      li.classList.add("deleted");
    } else {
      text.append(...richText(line.text, line));
    }
    if (!mine && !line.deleted && mentionsMe(line)) li.classList.add("mention");
    const parts = [meta, " ", from];
    if (mine) {
      const you = document.createElement("span");
      you.className = "you";
      you.textContent = "(you)";
      parts.push(" ", you);
    }
    if (line.reply) {
      const q = document.createElement("span");
      q.className = "quote";
      q.textContent = "↪ " + line.reply.from + ": " + (line.reply.excerpt || "message deleted");
      parts.push(" ", q); // a block of its own: no space before the text under it
    }
    parts.push(...(line.reply ? [text] : [" ", text]));
    if (line.edited && !line.deleted) {
      const e = document.createElement("span");
      e.className = "edited";
      e.textContent = "(edited)";
      parts.push(" ", e);
    }
    li.append(...parts);
    if (line.reactions && line.reactions.length && !line.deleted) li.append(reactionChips(line));
    if (line.seq && !line.deleted) li.append(actions(line, mine));
  } else {
    li.className = line.kind; // system, error or marker
    li.textContent = line.text;
  }
  return li;
}

// ---- read state --------------------------------------------------------------
// A signed-in user's read position in each room is the server's: this
// page marks a room read as its lines are seen (shown, the page visible,
// scrolled to the bottom), at most twice a second, and takes the marks of
// the user's other devices, clearing its unread counts. Guests count in
// the page alone.

// unreadOf counts the lines of c past its read position, but our own.
function unreadOf(c) {
  let n = 0;
  for (const l of c.lines) if (l.kind === "msg" && l.seq > c.readSeq && !l.deleted && !own(l)) n++;
  return n;
}

// markRead tells the server the current room is read to its last line,
// if the reader can see it.
function markRead() {
  const key = state.current, c = conv(key);
  if (!state.user || document.hidden || !atBottom()) return;
  if (key.startsWith("dm:")) {
    // DMs seen: the server posts no unread notification of them.
    const last = c.lines.filter((l) => l.kind === "msg" && l.from !== state.me).pop();
    if (last && last.ts > (state.dmsRead || 0) && online()) {
      state.dmsRead = last.ts;
      paced({ type: "read", dm: true });
    }
    return;
  }
  if (!key.startsWith("room:")) return;
  if (!c.lastSeq || c.lastSeq <= (c.readSeq || 0) || c.lastSeq <= (c.readSent || 0)) return;
  clearTimeout(c.readTimer);
  c.readTimer = setTimeout(() => {
    if (!online() || c.lastSeq <= (c.readSent || 0)) return;
    c.readAt = Date.now();
    c.readSent = c.lastSeq;
    paced({ type: "read", room: split(key)[1], seq: c.lastSeq });
  }, Math.max(0, 500 - (Date.now() - (c.readAt || 0))));
}

// placeMarker puts "new since you left" above the first line past c's
// read position (once a page load, when the server first tells it).
function placeMarker(c) {
  const i = c.lines.findIndex((l) => l.kind === "msg" && l.seq > c.readSeq && !own(l));
  if (i < 0) return;
  c.lines.splice(i, 0, { kind: "marker", text: "new since you left" });
  if (c.key === state.current) {
    const fromBottom = els.messages.scrollHeight - els.messages.scrollTop;
    els.messages.replaceChildren(...lineElements(c.lines, ""));
    els.messages.scrollTop = els.messages.scrollHeight - fromBottom;
  }
}

// richText turns a message's text into nodes: http(s) links made
// clickable (rel=noopener, a new tab), @mentions of this client
// highlighted, everything else text. Nothing is ever parsed as HTML.
const linkOrMention = /(https?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]'])|(@[\p{L}\p{N}_.-]+)/gu;
function richText(text, line) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(linkOrMention)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[1]) {
      const a = document.createElement("a");
      a.href = m[1]; // only http and https match
      a.textContent = m[1];
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      out.push(a);
    } else if (state.me && m[2].slice(1).toLowerCase() === state.me.toLowerCase() && (!line || mentionTime(line))) {
      const b = document.createElement("mark");
      b.textContent = m[2];
      out.push(b);
    } else {
      out.push(m[2]);
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

// mentions reports whether text mentions this client (@nick).
function mentions(text) {
  if (!state.me) return false;
  for (const m of text.matchAll(linkOrMention)) if (m[2] && m[2].slice(1).toLowerCase() === state.me.toLowerCase()) return true;
  return false;
}

// mentionTime reports whether a mention of our nick in line is of us: a
// signed-in user's nick is its own for good; a guest's only since it
// took it (an older "@alice" was for the alice of then).
function mentionTime(line) {
  return !!state.user || !line.ts || line.ts >= state.nickSince;
}

// mentionsMe reports whether a line mentions this client, by identity.
function mentionsMe(line) {
  return mentions(line.text) && mentionTime(line);
}

// actions are a line's buttons: reply, and, on our own lines, edit and
// delete.
function actions(line, mine) {
  const span = document.createElement("span");
  span.className = "actions";
  const button = (label, name, f) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = name; // its label is the stylesheet's (::before): kept out of the line's text, as copied or read
    b.setAttribute("aria-label", label + " " + line.from + "'s message");
    b.addEventListener("click", f);
    span.append(b);
  };
  button("Reply", "reply", () => startReply(line));
  button("React", "react", () => {
    // A few emoji to pick from, in place of the buttons.
    span.replaceChildren(...["👍", "❤️", "😂", "🎉", "👀", "🙏"].map((e) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "pick";
      b.textContent = e;
      b.setAttribute("aria-label", "React with " + e);
      b.addEventListener("click", () => react(line, e));
      return b;
    }));
    span.classList.add("picking");
    span.firstChild.focus();
  });
  if (mine) {
    button("Edit", "edit", () => startEdit(line));
    button("Delete", "delete", () => {
      const [, name] = split(state.current);
      paced({ type: "delete", room: name, seq: line.seq });
    });
  }
  return span;
}

// react toggles our reaction e on line.
function react(line, e) {
  const [kind, name] = split(state.current);
  if (kind === "room") paced({ type: "react", room: name, seq: line.seq, emoji: e });
}

// reactionChips shows a line's reactions: each emoji, its count, who (in
// its title); a click toggles ours.
function reactionChips(line) {
  const span = document.createElement("span");
  span.className = "reactions";
  for (const r of line.reactions) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "chip";
    b.textContent = r.emoji + " " + r.count;
    const who = r.who.join(", ") + (r.count > r.who.length ? " and " + (r.count - r.who.length) + " more" : "");
    b.title = who;
    b.setAttribute("aria-label", r.emoji + " " + r.count + ": " + who + ". Toggle yours");
    if (r.who.includes(state.me)) b.classList.add("mine");
    b.addEventListener("click", () => react(line, r.emoji));
    span.append(b);
  }
  return span;
}

// startReply and startEdit set the composer to answer or edit a line;
// cancelCompose sets it back.
function startReply(line) {
  state.editing = 0;
  state.replyTo = { seq: line.seq, from: line.from, text: line.text };
  showCompose("Replying to " + line.from + ": " + line.text.slice(0, 80));
  els.input.focus();
}
function startEdit(line) {
  state.replyTo = null;
  state.editing = line.seq;
  els.input.value = line.text;
  checkLength();
  showCompose("Editing your message");
  els.input.focus();
}
function showCompose(text) {
  $("compose-what").textContent = text;
  $("compose-state").hidden = false;
}
function cancelCompose() {
  const wasEditing = state.editing;
  state.replyTo = null;
  state.editing = 0;
  $("compose-state").hidden = true;
  if (wasEditing) els.input.value = "";
}

// changeLine applies an edited or deleted event to the line it names,
// on screen too.
function changeLine(key, seq, f) {
  const c = conv(key);
  const line = c.lines.find((l) => l.kind === "msg" && l.seq === seq);
  if (!line) return;
  f(line);
  if (key !== state.current) return;
  const old = els.messages.querySelector('li[data-seq="' + seq + '"]');
  if (old) old.replaceWith(lineElement(line));
}

function atBottom() {
  const m = els.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 40;
}

function addLine(key, line) {
  const c = conv(key);
  c.lines.push(line);
  // The lines kept are the lines shown: trimmed only when the reader is
  // at the bottom (a burst while scrolled up, then older pages loaded
  // above, cut 1,011 lines shown to 551 and lost the reader's place).
  const reading = key === state.current && !atBottom();
  if (c.lines.length > (reading ? MAX_SCROLLBACK : MAX_LINES)) c.lines.shift();
  if (key !== state.current) {
    if (line.kind === "msg") c.unread = c.readKnown ? unreadOf(c) : c.unread + 1;
    renderLists();
    return;
  }
  const stick = atBottom();
  els.messages.append(...lineElements([line], c.shownDay || ""));
  if (line.kind === "msg" && line.ts) c.shownDay = dayOf(line.ts);
  if (stick) {
    trimLines();
    els.messages.scrollTop = els.messages.scrollHeight;
  } else {
    els.jump.hidden = false; // the reader scrolled up: do not pull them down,
  } // nor take lines from above them (their place would jump): trimmed once back down
}

// lastDay returns the day of the last message of lines, or "".
function lastDay(lines) {
  for (let i = lines.length - 1; i >= 0; i--) if (lines[i].kind === "msg" && lines[i].ts) return dayOf(lines[i].ts);
  return "";
}

// trimLines keeps the last MAX_LINES lines, on screen and in the
// conversation (the reader is at the bottom).
function trimLines() {
  const c = conv(state.current);
  if (c.lines.length > MAX_LINES) {
    c.lines.splice(0, c.lines.length - MAX_LINES);
    c.noOlder = false; // trimmed lines can be loaded again
  }
  // One element a line, and the day separators between them.
  const m = els.messages;
  let shown = m.children.length - m.querySelectorAll(":scope > li.day").length;
  while (shown > c.lines.length && m.firstChild) {
    if (!m.firstChild.classList.contains("day")) shown--;
    m.firstChild.remove();
  }
}

function system(key, text, kind = "system") {
  addLine(key, { kind, text });
}

// dayOf names a message's day for the separators ("Tuesday, December 1").
function dayOf(ts) {
  return new Date(ts).toLocaleDateString([], { weekday: "long", month: "long", day: "numeric", year: "numeric" });
}

// daySeparator is a list item of its own (a role=separator inside the
// <ol> broke the list for screen readers: axe's "list"), headed so that a
// reader can jump from day to day.
function daySeparator(day) {
  const li = document.createElement("li");
  li.className = "day";
  const h = document.createElement("h3");
  h.textContent = day;
  li.append(h);
  return li;
}

// lineElements renders lines with a separator where the day changes;
// day is the day of the line before them ("" for none).
function lineElements(lines, day) {
  const out = [];
  for (const l of lines) {
    if (l.kind === "msg" && l.ts) {
      const d = dayOf(l.ts);
      if (d !== day) out.push(daySeparator(d));
      day = d;
    }
    out.push(lineElement(l));
  }
  return out;
}

function renderMessages() {
  const c = conv(state.current);
  c.unread = 0;
  els.messages.replaceChildren(...lineElements(c.lines, ""));
  c.shownDay = lastDay(c.lines);
  els.messages.scrollTop = els.messages.scrollHeight;
  els.jump.hidden = true;
  const [kind, name] = split(state.current);
  els.title.textContent = kind === "room" ? "#" + name : "@" + name;
  els.input.placeholder = kind === "room" ? "Message #" + name : "Message " + name;
  renderMembers();
  renderTyping();
  renderSeen();
  renderLists();
  markRead();
}

function split(key) {
  const i = key.indexOf(":");
  return [key.slice(0, i), key.slice(i + 1)];
}

function listItem(label, key, badge, onLeave, onClick) {
  const li = document.createElement("li");
  if (key === state.current) li.className = "current";
  const b = document.createElement("button");
  b.className = "item";
  b.type = "button";
  b.textContent = label;
  if (key) b.addEventListener("click", () => select(key)); // member entries bring their own
  else if (onClick) b.addEventListener("click", onClick);
  li.append(b);
  if (badge) {
    const s = document.createElement("span");
    s.className = "badge";
    s.textContent = badge;
    s.setAttribute("aria-label", badge + " unread");
    li.append(s);
  }
  if (onLeave) {
    const x = document.createElement("button");
    x.className = "leave";
    x.type = "button";
    x.textContent = "×";
    x.setAttribute("aria-label", "Leave " + label);
    x.addEventListener("click", onLeave);
    li.append(x);
  }
  return li;
}

// remembered returns the conversations kept from earlier visits.
function remembered() {
  try {
    return JSON.parse(localStorage.getItem("parley.convs") || "[]").filter((k) => typeof k === "string" && /^(room|dm):./.test(k));
  } catch {
    return [];
  }
}

// remember keeps the joined rooms and the DMs for the next visit.
function remember() {
  const keys = [...state.convs.values()].filter((c) => c.key.startsWith("dm:") || c.joined).map((c) => c.key);
  localStorage.setItem("parley.convs", JSON.stringify(keys.slice(0, 50)));
}

function renderLists() {
  remember();
  const rooms = [], dms = [];
  for (const c of state.convs.values()) {
    const [kind, name] = split(c.key);
    if (kind === "room" && c.joined) {
      const leave = name === state.defaultRoom ? null : () => request({ type: "leave", room: name });
      rooms.push(listItem("#" + name, c.key, c.unread || "", leave));
    } else if (kind === "dm") {
      dms.push(listItem("@" + name, c.key, c.unread || "", null));
    }
  }
  els.rooms.replaceChildren(...rooms);
  els.dms.replaceChildren(...dms);
  // On a phone the lists hide behind the menu button: it says there is
  // something unread in them.
  let unread = 0;
  for (const c of state.convs.values()) if (c.key !== state.current) unread += c.unread || 0;
  const menu = $("toggle-nav");
  menu.classList.toggle("unread", unread > 0);
  menu.setAttribute("aria-label", unread > 0 ? "Rooms, " + unread + " unread" : "Rooms");
}

function renderMembers() {
  const [kind] = split(state.current);
  const c = conv(state.current);
  $("members-title").textContent = kind === "room" ? "Members" : "Conversation";
  if (kind !== "room") {
    // A DM: its two people (an empty MEMBERS list said nothing).
    const [, peer] = split(state.current);
    els.members.replaceChildren(...[state.me, peer].filter((n, i, a) => n && a.indexOf(n) === i).map((n) => {
      const li = listItem(n, null, "", null);
      if (n === state.me) li.classList.add("me");
      return li;
    }));
    els.count.textContent = "";
    return;
  }
  els.count.textContent = "(" + c.count + ")";
  const names = [...c.members.keys()].sort((a, b) => a.localeCompare(b));
  const items = names.map((n) => {
    const li = listItem(n, null, "", null);
    if (n === state.me) li.classList.add("me");
    else li.firstChild.addEventListener("click", () => select("dm:" + n));
    li.firstChild.setAttribute("aria-label", n === state.me ? n + " (you)" : "Message " + n);
    return li;
  });
  if (c.truncated || c.count > names.length) {
    const li = document.createElement("li");
    li.className = "hint";
    li.textContent = "and " + (c.count - names.length) + " more";
    items.push(li);
  }
  els.members.replaceChildren(...items);
}

// renderSeen says who has read the current room's last message (small
// rooms: the server tells their members who read how far).
function renderSeen() {
  const c = conv(state.current);
  const last = c.lines.findLast((l) => l.kind === "msg" && l.seq);
  const who = last && c.seen ? [...c.seen].filter(([n, s]) => s >= last.seq && n !== state.me && n !== last.from).map(([n]) => n) : [];
  $("seen").textContent = who.length ? "Seen by " + who.join(", ") : "";
}

function renderTyping() {
  const c = conv(state.current);
  const who = [...c.typing.keys()];
  els.typing.textContent = who.length === 0 ? "" : who.join(", ") + (who.length === 1 ? " is typing…" : " are typing…");
}

// closeDrawers closes the phone drawers and says so to assistive
// technology (aria-expanded).
function closeDrawers() {
  els.nav.classList.remove("open");
  els.aside.classList.remove("open");
  $("toggle-nav").setAttribute("aria-expanded", "false");
  $("toggle-members").setAttribute("aria-expanded", "false");
}

function select(key) {
  // Each conversation keeps its own draft.
  if (state.current !== key) {
    conv(state.current).draft = els.input.value;
    els.input.value = conv(key).draft || "";
    checkLength();
  }
  conv(key);
  state.current = key;
  if (key.startsWith("room:")) location.hash = split(key)[1];
  renderMessages();
  closeDrawers();
  els.input.focus();
}

// ---- the connection ----------------------------------------------------------

function setStatus(text, cls) {
  els.status.textContent = text;
  els.status.className = cls;
}

function online() {
  return state.ws && state.ws.readyState === WebSocket.OPEN;
}

function newID() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function request(obj) {
  if (online()) state.ws.send(JSON.stringify(obj));
}

// takeToken refills the token bucket mirroring the server's rate limit
// and takes one if it can.
function takeToken() {
  const b = state.bucket, now = Date.now();
  b.tokens = Math.min(b.burst, b.tokens + ((now - b.last) / 1000) * b.rate);
  b.last = now;
  if (b.tokens < 1) return false;
  b.tokens--;
  return true;
}

// paced sends obj as soon as the rate limit allows, in order.
function paced(obj) {
  state.outbox.push(obj);
  pump();
}

let pumpTimer = 0;
function pump() {
  clearTimeout(pumpTimer);
  while (state.outbox.length > 0 && online() && takeToken()) request(state.outbox.shift());
  if (state.outbox.length > 0 && online()) {
    pumpTimer = setTimeout(pump, Math.ceil(1000 / state.bucket.rate));
  }
}

// A sign-in token may come in the URL's fragment (#token=..., or
// #room=name&token=...), which browsers never send to a server, so it
// stays out of every log. It is kept for this tab only and taken out of
// the address bar (and of bookmarks and shared links) at once.
function takeURLToken() {
  const h = location.hash.slice(1);
  if (!/(^|&)token=/.test(h)) return;
  const p = new URLSearchParams(h);
  if (p.get("token")) sessionStorage.setItem("parley.token", p.get("token"));
  const room = p.get("room") || "";
  history.replaceState(null, "", location.pathname + location.search + (room ? "#" + encodeURIComponent(room) : ""));
}

// retryAt reconnects at the time given, counting down in the status; the
// Retry button reconnects at once.
let retryTimer = 0, countdown = 0;
function retryAt(when) {
  clearTimeout(retryTimer);
  clearInterval(countdown);
  const tick = () => setStatus("offline, retrying in " + Math.max(0, Math.ceil((when - Date.now()) / 1000)) + " s", "closed");
  tick();
  countdown = setInterval(tick, 1000);
  retryTimer = setTimeout(() => { clearInterval(countdown); connect(); }, when - Date.now());
  $("retry").hidden = false;
}

$("retry").addEventListener("click", () => {
  clearTimeout(retryTimer);
  clearInterval(countdown);
  connect();
});

function connect() {
  $("retry").hidden = true;
  let url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const token = sessionStorage.getItem("parley.token");
  // A guest asks for its nick in the handshake, so that it comes back as
  // itself, not as guest-N renamed (the server says after the welcome if
  // it cannot have it).
  const askNick = !token && !!state.wantNick;
  if (token) url += "?access_token=" + encodeURIComponent(token);
  else if (askNick) url += "?nick=" + encodeURIComponent(state.wantNick);
  // One socket at a time: Retry pressed while a retry was connecting left
  // the first socket open, and its welcome said "open" while requests went
  // to the second, still connecting (and were dropped).
  const old = state.ws;
  if (old && old.readyState <= WebSocket.OPEN) {
    old.onmessage = old.onclose = null;
    old.close();
  }
  const ws = new WebSocket(url);
  state.ws = ws;
  state.askedNick = askNick;
  setStatus("connecting…", "connecting");
  let opened = false;
  ws.onopen = () => { opened = true; };
  ws.onmessage = (e) => {
    if (state.ws !== ws) return;
    let ev;
    try { ev = JSON.parse(e.data); } catch { return; }
    const h = handlers[ev.type];
    if (h) h(ev);
  };
  ws.onclose = (e) => {
    if (state.ws !== ws) return;
    if (e.code === 4001) {
      // Token expired: retrying with the same token is futile.
      sessionStorage.removeItem("parley.token");
      gate("Your sign-in expired (" + e.reason + "). Sign in again to go on.", true);
      return;
    }
    if (e.code === 4003) {
      // Banned: the server says until when and why (its check answers as a handshake would).
      check(url).then((why) => gate(why || "You were banned from this chat (" + e.reason + ").", false));
      return;
    }
    if (!opened) {
      // Refused before it opened? A browser cannot read the handshake's
      // answer: ask the server why, and show it rather than retry in vain.
      check(url).then((why) => {
        if (state.ws !== ws) return;
        if (why) {
          if (/token/.test(why)) sessionStorage.removeItem("parley.token");
          gate(why, /^401/.test(why));
        } else {
          retryLater();
        }
      });
      return;
    }
    retryLater();
    // Say so once per outage, not once per failed retry.
    system(state.current, "disconnected (" + e.code + (e.reason ? ": " + e.reason : "") + ")");
    for (const c of state.convs.values()) c.typing.clear();
  };
}

// retryLater reconnects after a backoff.
function retryLater() {
  const delay = Math.min(30000, 500 * 2 ** state.retry++) * (0.5 + Math.random() / 2);
  retryAt(Date.now() + delay);
}

// check asks the server why a handshake to url is refused: its one-line
// reason ("401 token expired", "403 banned until ...: ..."), or "" if it
// would be taken (the failure was elsewhere: try again).
async function check(url) {
  try {
    const u = new URL(url.replace(/^ws/, "http"));
    u.pathname = "/ws/check";
    const r = await fetch(u, { cache: "no-store" });
    return r.ok ? "" : (await r.text()).trim();
  } catch {
    return "";
  }
}

// gate shows why the chat cannot be used (signed out, a bad token, a
// ban), with a sign-in form when a token would help, and turns off what
// no longer works.
function gate(why, signIn) {
  clearTimeout(retryTimer);
  clearInterval(countdown);
  $("retry").hidden = true;
  setStatus(signIn ? "signed out" : "not allowed", "closed");
  $("gate").hidden = false;
  $("gate-title").textContent = signIn ? "Sign in to chat" : "You cannot chat here now";
  $("gate-reason").textContent = why.replace(/^\d{3} /, "");
  $("gate-form").hidden = !signIn;
  els.input.disabled = true;
  els.send.disabled = true;
  els.members.replaceChildren();
  els.count.textContent = "";
  if (signIn) $("gate-token").focus();
}

function ungate() {
  $("gate").hidden = true;
  els.input.disabled = false;
  els.send.disabled = false;
}


// renameDM follows a partner's new nick: the conversation keeps its
// lines and draft, and DMs typed now go to the new nick.
function renameDM(from, to) {
  const old = state.convs.get("dm:" + from);
  if (!old || state.convs.has("dm:" + to)) return;
  state.convs.delete(old.key);
  old.key = "dm:" + to;
  state.convs.set(old.key, old);
  old.lines.push({ kind: "system", text: from + " is now " + to });
  if (state.current === "dm:" + from) {
    state.current = old.key;
    renderMessages();
  } else renderLists();
}

// notify tells a reader who is looking elsewhere (the tab hidden) of a DM
// or a mention: a count in the title, a badge on the icon, and, if they
// opted in, a system notification.
function notify(title, text) {
  if (!document.hidden) return;
  state.unseen = (state.unseen || 0) + 1;
  document.title = "(" + state.unseen + ") Parley";
  setIcon(state.unseen);
  if ("Notification" in window && Notification.permission === "granted") {
    try { new Notification(title, { body: text.slice(0, 200), tag: "parley" }); } catch { /* some browsers want a service worker */ }
  }
}

// setIcon draws the tab's icon, with a badge of n (0: none).
function setIcon(n) {
  const c = document.createElement("canvas");
  c.width = c.height = 32;
  const g = c.getContext("2d");
  g.fillStyle = "#24292f";
  g.fillRect(0, 0, 32, 32);
  g.fillStyle = "#fff";
  g.font = "bold 20px sans-serif";
  g.fillText("P", 9, 23);
  if (n > 0) {
    g.fillStyle = "#cf222e";
    g.beginPath();
    g.arc(24, 8, 8, 0, 2 * Math.PI);
    g.fill();
    g.fillStyle = "#fff";
    g.font = "bold 11px sans-serif";
    g.fillText(n > 9 ? "9+" : String(n), n > 9 ? 17 : 21, 12);
  }
  let link = document.querySelector("link[rel=icon]");
  if (!link) {
    link = document.createElement("link");
    link.rel = "icon";
    document.head.append(link);
  }
  link.href = c.toDataURL("image/png");
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  markRead();
  state.unseen = 0;
  document.title = "Parley";
  setIcon(0);
});

const handlers = {
  welcome(ev) {
    state.retry = 0;
    ungate();
    if (tabs.ch) tabs.ch.postMessage({ type: "nick", nick: ev.nick });
    // Rooms and DMs of an earlier visit (this browser): back in the lists,
    // the rooms joined again.
    for (const key of remembered()) {
      const c = conv(key);
      if (key.startsWith("room:") && !c.wasJoined) c.rejoin = true;
    }
    if (ev.nick !== state.me || ev.user !== state.user || !state.nickSince) state.nickSince = Date.now();
    state.me = ev.nick;
    state.user = ev.user || "";
    state.sid = ev.sid || "";
    state.defaultRoom = ev.room;
    state.maxBytes = ev.limits.max_text_length; // bytes: checked as typed (checkLength)
    if (ev.limits.rate_per_second > 0) {
      // A little under the server's, so that clock drift never trips it.
      Object.assign(state.bucket, { rate: ev.limits.rate_per_second * 0.9, burst: Math.max(1, ev.limits.rate_burst - 2) });
      state.bucket.tokens = Math.min(state.bucket.tokens, state.bucket.burst);
    } else {
      Object.assign(state.bucket, { rate: 1e9, burst: 1e9, tokens: 1e9 });
    }
    setTimeout(pump, 0);
    setStatus("connected as " + ev.nick + (ev.user ? " (signed in)" : ""), "open");
    // A signed-in user's nick is its token's; guests pick theirs.
    $("signin").hidden = !!ev.user;
    $("signed").hidden = !ev.user;
    $("signed-as").textContent = ev.user ? "Signed in as " + ev.nick + "." : "";
    els.nick.disabled = !!ev.user;
    $("nick-form").querySelector("button").disabled = !!ev.user;
    if (ev.user) els.nick.value = ev.nick;
    else if (state.wantNick && state.wantNick !== ev.nick && !state.askedNick) request({ type: "nick", nick: state.wantNick });
    else els.nick.value = ev.nick;
    // Rejoin the rooms we were in, asking only for what we missed (the
    // default room is joined already); once their history is in, say again
    // what never came back.
    for (const c of state.convs.values()) {
      const [kind, name] = split(c.key);
      if (kind !== "room" || !c.joined) continue;
      c.resend = true;
      if (name !== ev.room) request({ type: "join", room: name, since: c.lastSeq, epoch: c.epoch });
    }
    for (const c of state.convs.values()) {
      if (!c.rejoin) continue;
      c.rejoin = false;
      const [, name] = split(c.key);
      c.quiet = name !== decodeURIComponent(location.hash.slice(1)); // back in the list, not in front of the reader (unless the URL names it)
      if (name !== ev.room) paced({ type: "join", room: name }); // many remembered rooms must not trip the rate limit
    }
    renderLists();
    const wanted = decodeURIComponent(location.hash.slice(1));
    if (wanted && !conv("room:" + wanted).joined) request({ type: "join", room: wanted });
    pump(); // what was asked while offline
  },
  join(ev) {
    const key = "room:" + ev.room;
    const c = conv(key);
    const first = !c.joined && !c.quiet;
    c.joined = true;
    c.wasJoined = true;
    c.quiet = false;
    if (c.epoch && c.epoch !== ev.epoch) {
      // The room's log began again (a server restart): it counts from 1.
      c.lastSeq = 0;
      system(key, "the server restarted: the room's history starts again");
    }
    c.epoch = ev.epoch;
    c.members = new Map(ev.members.map((n) => [n, true]));
    c.count = ev.count;
    c.truncated = !!ev.truncated;
    if (first && (ev.room === state.defaultRoom ? state.current === key : true)) select(key);
    else if (key === state.current) renderMembers();
    renderLists();
  },
  history(ev) {
    const key = "room:" + ev.room;
    const c = conv(key);
    if (c.loadingOlder) {
      // An older page: put it above, where the reader is, keeping their place.
      c.loadingOlder = false;
      const first = c.lines.find((l) => l.kind === "msg" && l.seq);
      const older = ev.messages.filter((m) => m.type === "message" && (!first || m.seq < first.seq)).map(lineOf);
      if (older.length === 0) { historyEnds(c); return; }
      c.lines.unshift(...older);
      if (key === state.current) {
        const fromBottom = els.messages.scrollHeight - els.messages.scrollTop;
        els.messages.replaceChildren(...lineElements(c.lines, ""));
        els.messages.scrollTop = els.messages.scrollHeight - fromBottom;
      }
      return;
    }
    if (ev.gap) system(key, "some messages from while you were away are no longer kept");
    // Edited and deleted events among them; reaction entries are not, so
    // numbers jump: nothing was missed (gap says when something was).
    c.replaying = true;
    for (const m of ev.messages) (handlers[m.type] || handlers.message)(m);
    c.replaying = false;
    if (c.resend) {
      c.resend = false;
      for (const [id, p] of state.pending) if (p.room === ev.room) request(sayAgain(p, id));
    }
    if (key === state.current) renderLists();
  },
  reset(ev) {
    const key = "room:" + ev.room;
    const c = conv(key);
    c.epoch = ev.epoch;
    c.lastSeq = ev.seq;
    system(key, "the server lost this room's history: it starts again");
  },
  message(ev) {
    const key = "room:" + ev.room;
    const c = conv(key);
    if (ev.id) state.pending.delete(ev.id); // ours, home safe
    if (!advance(c, key, ev.seq)) return;
    c.typing.delete(ev.from);
    const line = lineOf(ev);
    addLine(key, line);
    if (!own(line) && !line.deleted && mentionsMe(line)) notify(ev.from + " in #" + ev.room, ev.text);
    if (key === state.current) { renderTyping(); renderSeen(); markRead(); }
  },
  read(ev) {
    const key = "room:" + ev.room;
    const c = conv(key);
    if (c.epoch && ev.epoch !== c.epoch) return; // of the room's log before it began again
    if (c.readKnown && ev.seq <= c.readSeq) return;
    const first = !c.readKnown;
    c.readKnown = true;
    c.readSeq = ev.seq;
    if (first) placeMarker(c);
    c.unread = key === state.current && !document.hidden && atBottom() ? 0 : unreadOf(c);
    renderLists();
  },
  edited(ev) {
    const key = "room:" + ev.room;
    if (!advance(conv(key), key, ev.seq)) return;
    changeLine(key, ev.edits, (l) => { l.text = ev.text; l.edited = ev.ts; });
  },
  deleted(ev) {
    const key = "room:" + ev.room;
    const c = conv(key);
    if (!advance(c, key, ev.seq)) return;
    changeLine(key, ev.deletes, (l) => { l.text = ""; l.deleted = ev.ts; l.reply = null; });
    for (const l of c.lines) if (l.reply && l.reply.seq === ev.deletes && l.reply.excerpt) changeLine(key, l.seq, (r) => { r.reply = { ...r.reply, excerpt: "" }; });
    if (state.editing === ev.deletes && state.current === key) cancelCompose();
  },
  leave(ev) {
    const key = "room:" + ev.room;
    if (state.current === key) cancelCompose();
    conv(key).joined = false;
    if (state.current === key) select("room:" + state.defaultRoom);
    else renderLists();
  },
  presence(ev) {
    const key = "room:" + ev.room;
    const c = conv(key);
    c.count = ev.count;
    for (const n of ev.joined || []) { c.members.set(n, true); if (n !== state.me) system(key, n + " joined"); }
    for (const n of ev.left || []) { c.members.delete(n); system(key, n + " left"); }
    for (const r of ev.renamed || []) {
      c.members.delete(r.from);
      c.members.set(r.to, true);
      system(key, r.from + " is now " + r.to);
      renameDM(r.from, r.to);
    }
    if (key === state.current) renderMembers();
  },
  dm(ev) {
    if (ev.from !== state.me) notify("@" + ev.from, ev.text);
    if (ev.from === state.me) {
      for (const [id, d] of state.dmPending) if (d.to === ev.to && d.text === ev.text) { state.dmPending.delete(id); break; }
    }
    const peer = ev.from === state.me ? ev.to : ev.from;
    addLine("dm:" + peer, { kind: "msg", from: ev.from, text: ev.text, ts: ev.ts });
    renderLists();
    if (state.current === "dm:" + peer) markRead();
  },
  typing(ev) {
    const c = conv(ev.room ? "room:" + ev.room : "dm:" + ev.nick); // no room: typing a DM to us
    clearTimeout(c.typing.get(ev.nick));
    c.typing.set(ev.nick, setTimeout(() => { c.typing.delete(ev.nick); if (state.current === c.key) renderTyping(); }, 3000));
    if (state.current === c.key) renderTyping();
  },
  seen(ev) {
    // Someone signed in read this small room up to ev.seq.
    const c = conv("room:" + ev.room);
    c.seen = c.seen || new Map();
    c.seen.set(ev.nick, Math.max(ev.seq, c.seen.get(ev.nick) || 0));
    if (c.key === state.current) renderSeen();
  },
  reactions(ev) {
    const key = "room:" + ev.room;
    const c = conv(key);
    if (ev.seq && ev.seq > c.lastSeq) advance(c, key, ev.seq); // reaction entries count in the room's log
    for (const m of ev.messages) changeLine(key, m.seq, (l) => { l.reactions = m.reactions; });
  },
  rooms(ev) {
    const title = $("found-title");
    title.hidden = false;
    title.textContent = ev.rooms.length ? "Rooms" + (ev.q ? " with “" + ev.q + "”" : "") + ":" : "No room found" + (ev.q ? " with “" + ev.q + "”" : "") + ".";
    $("found").replaceChildren(...ev.rooms.map((r) => listItem("#" + r.room + " (" + r.count + ")", null, "", null, () => {
      const c = conv("room:" + r.room);
      if (c.joined) select(c.key);
      else paced({ type: "join", room: r.room });
    })));
  },
  search(ev) {
    const title = $("found-title");
    title.hidden = false;
    title.textContent = (ev.messages.length ? "Found in #" + ev.room : "Nothing found in #" + ev.room) + " for “" + ev.q + "”" + (ev.messages.length ? ":" : ".");
    $("found").replaceChildren(...ev.messages.map((m) => {
      const li = document.createElement("li");
      li.className = "hit";
      li.textContent = time(m.ts) + " " + m.from + ": " + m.text;
      return li;
    }));
  },
  nick(ev) {
    if (ev.nick === tabs.taking) tabs.taking = "";
    if (tabs.ch) tabs.ch.postMessage({ type: "nick", nick: ev.nick });
    state.me = ev.nick;
    state.nickSince = Date.now();
    state.wantNick = ev.nick;
    localStorage.setItem("parley.nick", ev.nick);
    els.nick.value = ev.nick;
    setStatus("connected as " + ev.nick, "open");
    renderMessages();
  },
  error(ev) {
    const p = ev.request && ev.request.id && state.pending.get(ev.request.id);
    if (p && ev.code === "not_delivered" && p.tries < 5) {
      // The server could not pass it on (its cluster's NATS is away): try again.
      p.tries++;
      setTimeout(() => request(sayAgain(p, ev.request.id)), 1000 * 2 ** p.tries);
      system("room:" + p.room, "not delivered yet, trying again: " + p.text, "error");
      return;
    }
    if (p && ev.code === "rate_limited") {
      // The server's clock and ours disagreed: say it again a little later.
      setTimeout(() => paced(sayAgain(p, ev.request.id)), 1000);
      return;
    }
    const d = ev.request && ev.request.id && state.dmPending.get(ev.request.id);
    if (d) {
      state.dmPending.delete(ev.request.id);
      if (ev.code === "rate_limited") {
        setTimeout(() => paced({ type: "dm", to: d.to, text: d.text, id: ev.request.id }), 1000);
        return;
      }
      if (!els.input.value && state.current === "dm:" + d.to) { els.input.value = d.text; checkLength(); } // not lost
    }
    if (p) state.pending.delete(ev.request.id);
    if (ev.code === "nick_taken" || ev.code === "bad_nick") {
      const wanted = state.wantNick;
      state.wantNick = "";
      els.nick.value = state.me;
      if (ev.code === "nick_taken" && wanted && wanted === tabs.taking && tabs.retries < 10) {
        // The other tab let go, but the server has not seen it leave yet.
        setTimeout(() => claimMoved(wanted), 200);
        return;
      }
      if (ev.code === "nick_taken" && ev.request && ev.request.type === "nick" && wanted && tabs.ch) {
        // Another tab of this browser may have it (its answer to our
        // hello may still be on its way): offer to move the chat here.
        const msg = ev.message;
        setTimeout(() => (tabs.others.has(wanted) ? offerMove(wanted) : system(state.current, msg, "error")), 300);
        return;
      }
    }
    system(state.current, ev.message, "error");
  },
};

// Tabs of this browser tell each other their nicks (BroadcastChannel). A
// second tab cannot hold the first one's guest nick, so it offers to move
// the chat: the first tab lets go of the nick and stops, this one takes it.
const tabs = { ch: "BroadcastChannel" in window ? new BroadcastChannel("parley") : null, others: new Set(), taking: "", retries: 0 };
if (tabs.ch) {
  tabs.ch.onmessage = (e) => {
    const m = e.data || {};
    if (m.type === "hello") tabs.ch.postMessage({ type: "nick", nick: state.me });
    else if (m.type === "nick" && m.nick) tabs.others.add(m.nick);
    else if (m.type === "take" && m.nick === state.me) {
      // Another tab takes over: let go of the nick and stay offline.
      tabs.moved = true;
      const ws = state.ws;
      state.ws = null;
      if (ws) ws.close(1000, "moved to another tab");
      setStatus("moved to another tab", "closed");
      system(state.current, "This chat moved to another tab. Reload to use it here.");
      tabs.ch.postMessage({ type: "released", nick: m.nick });
    } else if (m.type === "released" && m.nick === tabs.taking) {
      tabs.others.delete(m.nick);
      tabs.retries = 0;
      claimMoved(m.nick);
    }
  };
  tabs.ch.postMessage({ type: "hello" });
}

// claimMoved asks for the nick another tab let go of.
function claimMoved(nick) {
  tabs.retries++;
  state.wantNick = nick;
  request({ type: "nick", nick });
}

// offerMove shows the choice to move the chat from the tab holding nick.
function offerMove(nick) {
  const li = document.createElement("li");
  li.className = "error";
  li.append(nick + " is open in another tab of this browser; you are " + state.me + ". ");
  const b = document.createElement("button");
  b.type = "button";
  b.id = "use-here";
  b.textContent = "Use " + nick + " here";
  b.addEventListener("click", () => {
    tabs.taking = nick;
    tabs.ch.postMessage({ type: "take", nick });
    li.remove();
  });
  li.append(b);
  els.messages.append(li);
}

// sayAgain is the say of a pending message, to send again.
function sayAgain(p, id) {
  const req = { type: "say", room: p.room, text: p.text, id };
  if (p.reply) req.reply = p.reply;
  return req;
}

// lineOf is the line a room message event shows.
function lineOf(m) {
  return { kind: "msg", from: m.from, text: m.text, ts: m.ts, seq: m.seq, user: m.user || "", sid: m.sid || "",
    reply: m.reply || null, edited: m.edited || 0, deleted: m.deleted || 0 };
}

// advance counts a room log entry (a message, an edit, a delete) seen:
// false if it was seen already (a resumed history); a jump says what
// was missed.
function advance(c, key, seq) {
  if (seq <= c.lastSeq) return false;
  if (c.lastSeq > 0 && seq > c.lastSeq + 1 && !c.replaying) system(key, "missed " + (seq - c.lastSeq - 1) + " message(s)");
  c.lastSeq = seq;
  return true;
}

// ---- input ---------------------------------------------------------------------

let lastTyping = 0;
els.input.addEventListener("input", () => {
  checkLength();
  const [kind, name] = split(state.current);
  if (els.input.value && Date.now() - lastTyping > 1500 && state.outbox.length === 0 && takeToken()) {
    lastTyping = Date.now();
    request(kind === "room" ? { type: "typing", room: name } : { type: "typing", to: name });
  }
});

// checkLength holds the text to the server's limit, which counts bytes
// (UTF-8), not characters: 1,500 "é" are 3,000 bytes.
const encoder = new TextEncoder();
function checkLength() {
  const over = encoder.encode(els.input.value).length - state.maxBytes;
  const limit = $("limit");
  limit.hidden = over <= 0;
  limit.textContent = over > 0 ? over + " bytes too long (at most " + state.maxBytes + ")" : "";
  els.input.setAttribute("aria-invalid", String(over > 0));
  els.send.disabled = over > 0;
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = els.input.value;
  if (text.trim() === "" || encoder.encode(text).length > state.maxBytes) return;
  const [kind, name] = split(state.current);
  if (kind === "room" && state.editing) {
    if (!online()) { system(state.current, "offline: the edit was not sent", "error"); return; }
    paced({ type: "edit", room: name, seq: state.editing, text });
    cancelCompose();
  } else if (kind === "room") {
    // Said once, even if the connection drops now: kept until it comes back.
    const id = newID();
    const reply = state.replyTo ? state.replyTo.seq : 0;
    state.pending.set(id, { room: name, text, tries: 0, reply });
    const req = { type: "say", room: name, text, id };
    if (reply) req.reply = reply;
    if (online()) paced(req);
    else system(state.current, "offline: this will be said once reconnected: " + text);
    cancelCompose();
  } else if (online()) {
    const id = newID();
    state.dmPending.set(id, { to: name, text });
    paced({ type: "dm", to: name, text, id });
  } else {
    system(state.current, "offline: direct messages cannot wait, this one was not sent: " + text, "error");
  }
  els.input.value = "";
  lastTyping = 0;
  els.input.focus();
});

$("find-form").addEventListener("submit", (e) => {
  e.preventDefault();
  paced({ type: "rooms", q: $("find").value.trim() });
});
$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("search").value.trim();
  const [kind, name] = split(state.current);
  if (!q) return;
  if (kind !== "room") { system(state.current, "search works in rooms", "error"); return; }
  paced({ type: "search", room: name, q });
});

$("compose-cancel").addEventListener("click", () => { cancelCompose(); els.input.focus(); });

$("nick-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const nick = els.nick.value.trim();
  if (nick && nick !== state.me) {
    state.wantNick = nick;
    request({ type: "nick", nick });
  }
});

$("join-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const room = els.join.value.trim().replace(/^#/, "");
  if (!room) return;
  const c = conv("room:" + room);
  if (c.joined) select(c.key);
  else paced({ type: "join", room }); // kept until the socket is open, if it is not
  els.join.value = "";
});

els.messages.addEventListener("scroll", () => {
  if (atBottom()) {
    els.jump.hidden = true;
    trimLines();
    markRead();
  }
  if (els.messages.scrollTop < 40) loadOlder();
});

// historyEnds says, above c's first line, that there is nothing older
// to load: the room's first message, or as far as the server keeps.
function historyEnds(c) {
  c.noOlder = true;
  if (c.lines.length && c.lines[0].kind === "start") return;
  const first = c.lines.find((l) => l.kind === "msg" && l.seq);
  c.lines.unshift({ kind: "start", text: first && first.seq <= 1 ? "This is the start of the room." : "No older messages: the server keeps no more of this room's history." });
  if (c.key === state.current) {
    const fromBottom = els.messages.scrollHeight - els.messages.scrollTop;
    els.messages.replaceChildren(...lineElements(c.lines, ""));
    els.messages.scrollTop = els.messages.scrollHeight - fromBottom;
  }
}

// loadOlder asks for the messages before the oldest one shown (the
// protocol's history paging), once at a time.
function loadOlder() {
  const [kind, name] = split(state.current);
  const c = conv(state.current);
  const first = c.lines.find((l) => l.kind === "msg" && l.seq);
  if (kind !== "room" || c.loadingOlder || c.noOlder || !first || !online()) return;
  if (first.seq <= 1) { historyEnds(c); return; }
  c.loadingOlder = true;
  request({ type: "history", room: name, before: first.seq, limit: 50 });
}
els.jump.addEventListener("click", () => { els.messages.scrollTop = els.messages.scrollHeight; els.jump.hidden = true; });

for (const [btn, panel] of [[$("toggle-nav"), els.nav], [$("toggle-members"), els.aside]]) {
  btn.addEventListener("click", () => {
    const open = panel.classList.toggle("open");
    btn.setAttribute("aria-expanded", String(open));
    // Focus goes into the drawer opened (it stayed on its button), and
    // back to the button when it closes.
    if (open) (panel.querySelector("input, button") || panel).focus();
  });
}
// A tap outside an open drawer closes it (on a phone the drawers cover the
// chat, and only their buttons closed them).
document.addEventListener("pointerdown", (e) => {
  for (const [btn, panel] of [[$("toggle-nav"), els.nav], [$("toggle-members"), els.aside]]) {
    if (panel.classList.contains("open") && !panel.contains(e.target) && !btn.contains(e.target)) {
      panel.classList.remove("open");
      btn.setAttribute("aria-expanded", "false");
    }
  }
});
// The phone's keyboard opening shrinks the viewport (844 -> 470 px): the
// newest lines stay in view if they were.
if (window.visualViewport) {
  let wasAtBottom = true;
  els.messages.addEventListener("scroll", () => { wasAtBottom = atBottom(); });
  window.visualViewport.addEventListener("resize", () => {
    if (wasAtBottom) els.messages.scrollTop = els.messages.scrollHeight;
  });
}

// Alt+Up / Alt+Down walk the conversations; Escape closes the drawers.
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") { closeDrawers(); if (state.replyTo || state.editing) cancelCompose(); return; }
  if (!e.altKey || (e.key !== "ArrowUp" && e.key !== "ArrowDown")) return;
  const keys = [...state.convs.values()].filter((c) => c.joined || c.key.startsWith("dm:")).map((c) => c.key);
  const i = keys.indexOf(state.current);
  if (keys.length > 0) select(keys[(i + (e.key === "ArrowDown" ? 1 : keys.length - 1)) % keys.length]);
  e.preventDefault();
});

$("notify").addEventListener("click", async () => {
  const p = await Notification.requestPermission();
  $("notify").hidden = p === "granted" || p === "denied";
});
$("notify").hidden = !("Notification" in window) || Notification.permission !== "default";

// The composer grows with its text (up to 6 lines); Enter sends,
// Shift+Enter starts a new line.
els.input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
els.input.addEventListener("input", () => {
  els.input.style.height = "auto";
  els.input.style.height = Math.min(els.input.scrollHeight, 6 * 24) + "px";
});

// Sign in by pasting a token (a server that admits users only refuses
// the connection without one), and out again.
$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const t = $("token").value.trim();
  if (!t) return;
  sessionStorage.setItem("parley.token", t);
  $("token").value = "";
  reconnectNow();
});
$("signout").addEventListener("click", () => {
  sessionStorage.removeItem("parley.token");
  reconnectNow();
});

$("gate-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const t = $("gate-token").value.trim();
  if (!t) return;
  sessionStorage.setItem("parley.token", t);
  $("gate-token").value = "";
  ungate();
  reconnectNow();
});
$("gate-retry").addEventListener("click", () => { ungate(); reconnectNow(); });

// reconnectNow drops the connection and opens a new one at once.
function reconnectNow() {
  clearTimeout(retryTimer);
  clearInterval(countdown);
  const old = state.ws;
  state.ws = null; // its close is not an outage
  if (old) old.close(1000, "reconnecting");
  connect();
}

setIcon(0);
takeURLToken();
connect();
