// Operator dashboard: live calls over the operator WebSocket, decisions over HTTP POST.
//
// Time: every deadline is on the server's clock. The browser never trusts its own wall clock; it
// keeps an offset measured with ping/pong (half the round trip) on a monotonic clock.
// Pushes carry a per-stream sequence number; a gap means something was dropped, so we ask for a
// snapshot, which is the truth.

import { clockTime, dateAndTime, gettext, integer, ngettext, relative, seconds, t } from "./l10n.js";

const $ = (sel, root = document) => root.querySelector(sel);
const csrfToken = $('meta[name="csrf-token"]').content;
const pendingList = $("#pending");
const recentList = $("#recent");
const template = $("#call-template");
const connBadge = $("#conn");
const banner = $("#pbx-banner");
const endedBox = $("#ended");

// The server closes the socket with these codes when the operator's access ends
// (screening/calls/sessions.py): retrying would only be refused again.
const ENDED = {
  4401: gettext("You were signed out, so this page no longer shows calls."),
  4403: gettext("You may no longer screen calls (your permission or group changed)."),
};

// What the wire's machine values mean to a person, in the page's language; the server's own
// label (in its default language, as pushes are shared by everyone) only for a value this page
// does not know.
const STATUS_LABELS = {
  pending: gettext("Waiting for an operator"),
  deciding: gettext("Decision being sent to the PBX"),
  accepted: gettext("Accepted"),
  refused: gettext("Refused"),
  expired: gettext("Expired: the PBX routed the call itself"),
  gone: gettext("Gone: caller hung up or channel not found"),
  failed: gettext("Failed: the PBX did not carry out the decision"),
  unscreened: gettext("Unscreened: offered while the event link was down"),
};
const REASON_LABELS = {
  spam: gettext("Spam or sales"),
  wrong_number: gettext("Wrong number"),
  abusive: gettext("Abusive"),
  other: gettext("Other"),
};
const DECIDED_BY_LABELS = {
  trunk_policy: gettext("Trunk policy"),
  rule: gettext("Screening rule"),
  fallback: gettext("No operator online"),
  pbx_timeout: gettext("PBX (window passed)"),
  caller: gettext("Caller hung up"),
};
const LINK_MESSAGES = {
  up: gettext("Connected to the PBX."),
  webhook: gettext("Receiving PBX events by webhook."),
  connecting: gettext("Connecting to the PBX: calls are being routed unscreened."),
  down: gettext("PBX link down: calls are being routed unscreened."),
  auth_failed: gettext("The PBX refused our credentials: calls are being routed unscreened. Fix PBX_CLIENT_ID / PBX_CLIENT_SECRET and restart."),
  not_configured: gettext("No PBX is configured: calls are not being screened."),
  unknown: gettext("The PBX link state cannot be read (shared cache unreachable): calls may be routed unscreened."),
};

const statusLabel = (call) => STATUS_LABELS[call.status] || call.status_label || call.status;
const reasonLabel = (call) => REASON_LABELS[call.reason] || call.reason_label || call.reason;
// A person's name as it is; a rule or policy by what it was.
const deciderLabel = (call) => (call.decided_by_kind && call.decided_by_kind !== "operator"
  ? DECIDED_BY_LABELS[call.decided_by_kind] || call.decided_by : call.decided_by);

const OPEN = new Set(["pending", "deciding"]);
const RECENT_MAX = 10;

const state = {
  calls: new Map(), // id -> call (open calls)
  recent: [], // finished calls, newest first
  seq: {}, // stream -> last sequence number seen
  selected: null, // id of the selected call
  sending: new Set(), // ids with a decision request in flight from this browser
  errors: new Map(), // id -> message from our last decide attempt
  clock: { offset: null, bestRtt: Infinity }, // server_ms = performance.now() + offset
  ws: null,
  retries: 0,
  confirming: false, // reconnected once to confirm an ENDED close; cleared by the next snapshot
};

// --- clock ----------------------------------------------------------------------------------

function serverNow() {
  return state.clock.offset === null ? Date.now() : performance.now() + state.clock.offset;
}

function syncClock(serverTime, sentAt, receivedAt) {
  const rtt = receivedAt - sentAt;
  // Keep the tightest sample, but let old samples age so a sleeping laptop re-syncs.
  state.clock.bestRtt *= 1.05;
  if (rtt <= state.clock.bestRtt || state.clock.offset === null) {
    state.clock.bestRtt = rtt;
    state.clock.offset = serverTime + rtt / 2 - receivedAt;
  }
}

// --- connection -----------------------------------------------------------------------------

function setConn(value, text) {
  connBadge.dataset.state = value;
  connBadge.textContent = text;
  document.body.dataset.ws = value;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/operator/`);
  state.ws = ws;
  setConn("connecting", gettext("Connecting…"));
  let openedAt = 0;
  let opened = false; // a snapshot came: the server let this socket in
  ws.addEventListener("open", () => {
    openedAt = performance.now();
    ping();
    reportVisibility();
  });
  ws.addEventListener("message", (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg.type === "snapshot" && !opened) {
      opened = true; // only a socket the server let in gets one; "Live" from then on
      state.confirming = false;
      endedBox.hidden = true;
      setConn("open", gettext("Live"));
    }
    handle(msg, openedAt);
  });
  ws.addEventListener("close", (event) => {
    if (state.ws !== ws) return;
    state.ws = null;
    if (event.code in ENDED) {
      forget(); // no caller's number stays on screen for someone no longer allowed to see it
      if (opened && !state.confirming) {
        // Once, after a socket that was working: changing your own password closes the socket a
        // moment before the session is updated to the new password; a second try tells.
        state.confirming = true;
        setConn("connecting", gettext("Checking your session…"));
        setTimeout(connect, 1000);
        return;
      }
      endedBox.hidden = false;
      $(".ended-text", endedBox).textContent = ENDED[event.code];
      setConn("ended", event.code === 4401 ? gettext("Signed out") : gettext("Not allowed"));
      return;
    }
    const delay = Math.min(5000, 500 * 2 ** state.retries) * (0.5 + Math.random() / 2);
    state.retries += 1;
    // 4503: the server could not reach its shared state (Redis, the database) for a snapshot.
    const wait = Math.ceil(delay / 1000);
    setConn("closed", event.code === 4503
      ? t(gettext("Server unavailable, retrying in %(seconds)s s"), { seconds: wait })
      : t(gettext("Disconnected, retrying in %(seconds)s s"), { seconds: wait }));
    setTimeout(connect, delay);
  });
}

function forget() {
  state.calls.clear();
  state.recent = [];
  state.seq = {};
  render();
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function ping() {
  send({ type: "ping", t: performance.now() });
}
setInterval(ping, 10000);

function requestSnapshot() {
  send({ type: "snapshot" });
}

// --- messages -------------------------------------------------------------------------------

function handle(msg, openedAt) {
  switch (msg.type) {
    case "snapshot":
      if (state.clock.offset === null) syncClock(msg.server_time, openedAt, performance.now());
      applySnapshot(msg);
      break;
    case "pong":
      if (typeof msg.t === "number") syncClock(msg.server_time, msg.t, performance.now());
      break;
    case "resync": // the server's channel layer may have lost pushes to us: fetch the truth
      requestSnapshot();
      break;
    case "call":
    case "link":
      if (!checkSequence(msg)) return;
      if (msg.type === "call") upsert(msg.call, true);
      else showLink(msg.link);
      render();
      break;
    default:
      break;
  }
}

function checkSequence(msg) {
  const last = state.seq[msg.stream];
  if (last === undefined) return true; // no snapshot yet: it will follow
  if (msg.seq <= last) return msg.type === "call"; // late: versions decide for calls
  if (msg.seq > last + 1) requestSnapshot(); // something was dropped in between
  state.seq[msg.stream] = msg.seq;
  return true;
}

function applySnapshot(msg) {
  // The backoff restarts only once the server could serve us: a socket it accepts and closes at
  // once (4503, its shared state is down) keeps backing off, rather than retrying every 0.5 s.
  state.retries = 0;
  state.seq = { ...msg.seq };
  const known = new Set(state.calls.keys());
  state.calls.clear();
  for (const call of msg.calls) {
    state.calls.set(call.id, call);
    if (!known.has(call.id) && call.status === "pending") alertNewCall(call);
  }
  state.recent = msg.recent.slice(0, RECENT_MAX);
  showLink(msg.link);
  render();
}

function upsert(call, fromPush) {
  const current = state.calls.get(call.id) || state.recent.find((c) => c.id === call.id);
  if (current && current.version > call.version) return; // an older state arrived late
  if (call.status === "deciding" && call.decided_by_kind && call.decided_by_kind !== "operator") {
    // A rule or policy is sending its decision: nobody may act on it, so it is not listed as
    // waiting; its outcome shows under recent outcomes when the PBX has answered.
    state.calls.delete(call.id);
    return;
  }
  if (OPEN.has(call.status)) {
    const isNew = !current;
    state.calls.set(call.id, call);
    if (isNew && fromPush && call.status === "pending") alertNewCall(call);
  } else {
    state.calls.delete(call.id);
    state.recent = [call, ...state.recent.filter((c) => c.id !== call.id)].slice(0, RECENT_MAX);
  }
}

function showLink(info) {
  if (!banner || !info) return;
  banner.hidden = !info.unscreened;
  banner.dataset.state = info.state;
  const message = LINK_MESSAGES[info.state];
  $(".banner-text", banner).textContent = !message ? info.message
    : info.detail && info.state !== "up" ? `${message} (${info.detail})` : message;
}

// --- rendering ------------------------------------------------------------------------------

function ordered() {
  return [...state.calls.values()].sort((a, b) => a.deadline - b.deadline);
}

function actionable(call) {
  return call.status === "pending" && serverNow() < call.last_useful && !state.sending.has(call.id);
}

// A/R must always hit a call that can still be decided: when the selected call runs out of time
// or someone else takes it, the selection moves to the most urgent call still open to a decision.
function ensureSelection(calls) {
  const current = state.calls.get(state.selected);
  if (current && actionable(current)) return;
  const next = calls.find(actionable) || current || calls[0];
  state.selected = next ? next.id : null;
}

function selectionWentStale() {
  const current = state.calls.get(state.selected);
  return Boolean(current && !actionable(current) && ordered().some(actionable));
}

function render() {
  const calls = ordered();
  ensureSelection(calls);
  const existing = new Map([...pendingList.children].map((li) => [Number(li.dataset.id), li]));
  calls.forEach((call, index) => {
    let li = existing.get(call.id);
    if (!li) li = buildCard(call);
    existing.delete(call.id);
    fillCard(li, call);
    if (pendingList.children[index] !== li) pendingList.insertBefore(li, pendingList.children[index] || null);
  });
  for (const li of existing.values()) li.remove();
  $("#pending-count").textContent = String(calls.length);
  $("#empty").hidden = calls.length > 0;
  renderRecent();
  tick();
}

function buildCard(call) {
  const li = template.content.firstElementChild.cloneNode(true);
  li.dataset.id = String(call.id);
  li.addEventListener("click", (event) => {
    state.selected = call.id;
    const action = event.target.closest("button")?.dataset.action;
    if (action) decide(call.id, action);
    render();
  });
  return li;
}

function describeHistory(history) {
  if (!history || history.withheld) return gettext("Number withheld: no history.");
  if (!history.count) return gettext("First call from this number in 30 days.");
  const count = history.count;
  if (!history.last) {
    return t(ngettext("%(count)s earlier call in 30 days.", "%(count)s earlier calls in 30 days.", count), { count });
  }
  return t(ngettext(
    "%(count)s earlier call in 30 days; last %(when)s: %(outcome)s (%(by)s).",
    "%(count)s earlier calls in 30 days; last %(when)s: %(outcome)s (%(by)s).",
    count,
  ), {
    count,
    when: dateAndTime(history.last.at),
    outcome: statusLabel(history.last),
    by: history.last.decided_by,
  });
}

function fillCard(li, call) {
  li.dataset.status = call.status;
  const selected = call.id === state.selected;
  li.classList.toggle("selected", selected);
  li.setAttribute("aria-current", selected ? "true" : "false");
  $(".caller", li).textContent = call.caller || gettext("Withheld");
  $(".called", li).textContent = call.called || "?";
  $(".trunk", li).textContent = call.trunk;
  $(".history", li).textContent = describeHistory(call.history);
  fillContext(li, call);
  li.setAttribute("aria-label", t(gettext("Call from %(caller)s to %(called)s on %(trunk)s"), {
    caller: callerLabel(call), called: call.called, trunk: call.trunk,
  }));
  $(".bar", li).setAttribute("aria-valuemax", String(Math.round((call.last_useful - call.received_at) / 1000)));
  updateStatus(li, call);
}

function updateStatus(li, call) {
  const status = $(".status", li);
  const late = serverNow() >= call.last_useful;
  let text = "";
  let disabled = false;
  if (state.sending.has(call.id)) {
    text = gettext("Sending your decision to the PBX…");
    disabled = true;
  } else if (call.status === "deciding") {
    text = call.decided_by
      ? t(gettext("%(name)s is deciding…"), { name: call.decided_by }) : gettext("Someone is deciding…");
    disabled = true;
  } else if (late) {
    text = gettext("Too late: the PBX is routing this call itself.");
    disabled = true;
  } else if (state.errors.has(call.id)) {
    text = state.errors.get(call.id);
  }
  if (status.textContent !== text) status.textContent = text;
  for (const button of li.querySelectorAll(".actions button")) {
    button.disabled = disabled;
    button.title = disabled ? text : "";
  }
}

function renderRecent() {
  // Entries are kept per call (not rebuilt), so a form or button inside one keeps its focus and
  // what was typed when a push re-renders the list.
  const existing = new Map([...recentList.children].map((li) => [Number(li.dataset.id), li]));
  state.recent.forEach((call, index) => {
    let li = existing.get(call.id);
    existing.delete(call.id);
    if (!li) {
      li = document.createElement("li");
      li.dataset.id = String(call.id);
      li.append(Object.assign(document.createElement("span"), { className: "outcome-text" }));
    }
    li.dataset.status = call.status;
    const who = call.decided_by ? ` ${t(gettext("by %(name)s"), { name: deciderLabel(call) })}` : "";
    const err = call.pbx_errcode && call.status !== "accepted" && call.status !== "refused"
      ? ` (PBX ${call.pbx_errcode} ${call.pbx_errmsg})` : "";
    $(".outcome-text", li).textContent = `${callerLabel(call, gettext("Withheld"))} → ${call.called} (${call.trunk}): ${statusLabel(call)}${who}${err}`;
    fillAfterActions(li, call);
    if (recentList.children[index] !== li) recentList.insertBefore(li, recentList.children[index] || null);
  });
  for (const li of existing.values()) li.remove();
}

// The countdown runs on animation frames; it only touches the bar width and the seconds text.
function tick() {
  if (selectionWentStale()) {
    render(); // render() calls tick() again with the selection moved
    return;
  }
  const now = serverNow();
  for (const li of pendingList.children) {
    const call = state.calls.get(Number(li.dataset.id));
    if (!call) continue;
    const total = call.last_useful - call.received_at;
    const left = Math.max(0, call.last_useful - now);
    const fraction = total > 0 ? left / total : 0;
    $(".fill", li).style.width = `${(fraction * 100).toFixed(1)}%`;
    li.dataset.urgency = fraction < 0.3 ? "high" : fraction < 0.6 ? "medium" : "low";
    $(".seconds", li).textContent = seconds(left / 1000);
    $(".bar", li).setAttribute("aria-valuenow", String(Math.round(left / 1000)));
    updateStatus(li, call);
  }
}

function loop() {
  tick();
  requestAnimationFrame(loop);
}

// --- decisions ------------------------------------------------------------------------------

async function decide(id, action) {
  const call = state.calls.get(id);
  if (!call || !actionable(call)) return;
  state.sending.add(id);
  state.errors.delete(id);
  // 1-4 pressed while the refusal is still on its way wait for it (see reasonByKey).
  let settle = () => {};
  if (action === "refuse") armReasonKeys(id, new Promise((resolve) => { settle = resolve; }));
  render();
  try {
    const response = await fetch(`/calls/${id}/${action}`, {
      method: "POST",
      headers: { "X-CSRFToken": csrfToken, Accept: "application/json" },
      credentials: "same-origin",
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (body && body.call) upsert(body.call, false);
    if (response.ok && action === "refuse") armReasonKeys(id);
    settle(response.ok);
    if (!response.ok) {
      const message = (body && body.error) || t(gettext("The server answered %(status)s."), { status: response.status });
      state.errors.set(id, message);
      if (response.status === 401 || response.status === 403) setConn("closed", message);
    }
  } catch {
    state.errors.set(id, gettext("Could not reach pbxscreen; the decision was not sent."));
  } finally {
    settle(false); // no-op when already settled
    state.sending.delete(id);
    render();
  }
}

function moveSelection(step) {
  const calls = ordered();
  if (!calls.length) return;
  const index = Math.max(0, calls.findIndex((c) => c.id === state.selected));
  const next = calls[Math.min(calls.length - 1, Math.max(0, index + step))];
  state.selected = next.id;
  render();
  pendingList.querySelector(`[data-id="${next.id}"]`)?.focus();
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest("input, textarea, select, [contenteditable]")) return;
  const key = event.key.toLowerCase();
  if (key === "a" || key === "r") {
    if (state.selected !== null) decide(state.selected, key === "a" ? "accept" : "refuse");
    event.preventDefault();
  } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    moveSelection(event.key === "ArrowDown" ? 1 : -1);
    event.preventDefault();
  } else if (REASON_KEYS[event.key]) {
    if (reasonByKey(REASON_KEYS[event.key])) event.preventDefault();
  } else if (key === "n") {
    if (focusNoteForm()) event.preventDefault();
  } else if (key === "b" || key === "w") {
    if (focusFollowUp(key === "b" ? "block" : "allow")) event.preventDefault();
  }
});

// --- team memory: refusal reasons, notes, follow-up rules -----------------------------------
//
// R refuses at once, as ever; the reason comes after: 1 to 4 within REASON_KEY_MS of our own
// refusal (or while focus is in that call's entry under "Recent outcomes"), or the entry's
// reason menu. The server lets the refusing operator change it for 5 minutes
// (reason_editable_until). Notes go to every card of the number; follow-up buttons turn a
// decided call into a rule for its number.

const REASON_KEYS = { 1: "spam", 2: "wrong_number", 3: "abusive", 4: "other" };
const REASON_KEY_MS = 5000;
const operatorName = JSON.parse($("#operator-name")?.textContent || '""');
const afterTemplate = $("#after-template");
const memory = {
  armed: null, // {id, until, sent}: the call the 1-4 keys give a reason to, until (performance.now)
  notices: new Map(), // id -> what the last reason/note/follow-up request said
};
state.memory = memory;

// ``sent``: while our refusal is still on its way, a promise of whether it went through.
function armReasonKeys(id, sent = null) {
  memory.armed = { id, until: performance.now() + REASON_KEY_MS, sent };
}

function reasonTarget() {
  const focused = document.activeElement?.closest("#recent li[data-id]");
  if (focused) return Number(focused.dataset.id);
  if (memory.armed && performance.now() < memory.armed.until) return memory.armed.id;
  return null;
}

function reasonByKey(reason) {
  const id = reasonTarget();
  if (id === null) return false;
  const sent = memory.armed?.id === id ? memory.armed.sent : null;
  armReasonKeys(id, sent); // a second key within the window corrects the first
  if (sent) {
    // Pressed before the refusal's answer came back: give the reason once it has.
    sent.then((ok) => ok && postMemory(id, "reason", { reason }));
  } else {
    postMemory(id, "reason", { reason });
  }
  return true;
}

function focusNoteForm() {
  const li = (state.selected !== null && pendingList.querySelector(`li.call[data-id="${state.selected}"]`))
    || recentList.querySelector("li[data-id]");
  if (!li) return false;
  const details = $("details.follow", li);
  if (details) details.open = true;
  const input = $('form.note-form input[name="text"]', li);
  if (!input || input.closest("[hidden]")) return false;
  input.focus();
  return true;
}

// B / W: the follow-up of the outcome in focus, or else of the last call this operator decided:
// its "Refuse and block" / "Accept and always allow" button gets the focus, so Enter confirms
// for the duration shown (Shift+Tab reaches the duration first).
function focusFollowUp(action) {
  const focused = document.activeElement?.closest("#recent li[data-id]");
  const mine = state.recent.find((call) => call.decided_by === operatorName && call.caller_key);
  const li = focused || (mine && recentList.querySelector(`li[data-id="${mine.id}"]`));
  const details = li && $("details.follow", li);
  if (!details || details.hidden) return false;
  details.open = true;
  $(`button[data-follow="${action}"]`, details).focus();
  return true;
}

function notice(id, text, failed = false) {
  memory.notices.set(id, { text, failed });
  for (const el of document.querySelectorAll(`[data-id="${id}"] .memory-status`)) {
    el.textContent = text;
    el.dataset.failed = failed ? "true" : "false";
  }
}



async function postMemory(id, what, data) {
  const path = { reason: "reason", note: "notes", follow: "follow-up" }[what];
  let response;
  let body = null;
  try {
    response = await fetch(`/calls/${id}/${path}`, {
      method: "POST",
      headers: { "X-CSRFToken": csrfToken, Accept: "application/json", "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify(data),
    });
    body = await response.json();
  } catch {
    notice(id, gettext("Could not reach pbxscreen; nothing was saved."), true);
    return null;
  }
  if (!response.ok || !body || !body.ok) {
    notice(id, (body && body.error) || t(gettext("The server answered %(status)s."), { status: response.status }), true);
    return null;
  }
  if (what === "reason") {
    upsert(body.call, false);
    notice(id, t(gettext("Reason saved: %(reason)s."), { reason: reasonLabel(body.call) }));
    render();
  } else if (what === "note") {
    notice(id, gettext("Note saved: it shows on every card of this number."));
  } else {
    notice(id, followUpNotice(data.action, data.duration, body.rule.id, body.created));
  }
  return body;
}

// "Blocked for 7 days: rule #12." The durations are whole phrases, so each language can word them.
function followUpNotice(action, duration, ruleId, created) {
  const block = action === "block";
  const messages = {
    "1d": block ? gettext("Blocked for 1 day: rule #%(rule)s.") : gettext("Always allowed for 1 day: rule #%(rule)s."),
    "7d": block ? gettext("Blocked for 7 days: rule #%(rule)s.") : gettext("Always allowed for 7 days: rule #%(rule)s."),
    permanent: block ? gettext("Blocked permanently: rule #%(rule)s.") : gettext("Always allowed permanently: rule #%(rule)s."),
  };
  const said = t(messages[duration] || messages.permanent, { rule: ruleId });
  return created ? said : `${said} ${gettext("(The rule in force was extended.)")}`;
}

function fillAfterActions(li, call) {
  let after = $(".after", li);
  if (!after) {
    after = afterTemplate.content.firstElementChild.cloneNode(true);
    li.append(after);
    li.tabIndex = -1;
  }
  const shown = $(".reason-shown", after);
  const reasonText = call.reason
    ? t(gettext("Reason: %(reason)s"), { reason: reasonLabel(call) }) + (call.reason_note ? ` (${call.reason_note})` : "") : "";
  if (shown.textContent !== reasonText) shown.textContent = reasonText;
  const editable = call.reason_editable_until && serverNow() < call.reason_editable_until
    && call.decided_by === operatorName;
  $(".reason-menu", after).hidden = !editable;
  for (const button of after.querySelectorAll("[data-reason]")) {
    button.setAttribute("aria-pressed", String(button.dataset.reason === call.reason));
  }
  $("details.follow", after).hidden = !call.caller_key; // withheld: nothing to key it on
  const said = memory.notices.get(call.id);
  const status = $(":scope > .memory-status", after);
  if (said && status.textContent !== said.text) {
    status.textContent = said.text;
    status.dataset.failed = said.failed ? "true" : "false";
  }
}

recentList.addEventListener("click", (event) => {
  const li = event.target.closest("li[data-id]");
  const button = event.target.closest("button");
  if (!li || !button) return;
  const id = Number(li.dataset.id);
  if (button.dataset.reason) {
    postMemory(id, "reason", { reason: button.dataset.reason });
  } else if (button.dataset.follow) {
    const duration = $(".follow-duration", li).value;
    button.disabled = true;
    postMemory(id, "follow", { action: button.dataset.follow, duration }).finally(() => {
      button.disabled = false;
    });
  }
});

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form.note-form");
  const li = form?.closest("li[data-id]");
  if (!li) return;
  event.preventDefault();
  const id = Number(li.dataset.id);
  const text = form.elements.text.value.trim();
  if (!text) {
    notice(id, gettext("Write the note first."), true);
    form.elements.text.focus();
    return;
  }
  const data = { text };
  const until = form.elements.expires_at.value.trim();
  if (until) data.expires_at = until;
  const button = $('button[type="submit"]', form);
  button.disabled = true;
  const saved = await postMemory(id, "note", data);
  button.disabled = false;
  if (saved) form.reset();
});

// Escape leaves a note field for the call list, where the keys work again.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || !event.target.closest("form.note-form")) return;
  event.target.blur();
  const card = event.target.closest("li[data-id]");
  if (card) card.focus();
});

// --- alerts ---------------------------------------------------------------------------------

const prefs = { chime: $("#pref-chime"), notify: $("#pref-notify") };
for (const [name, box] of Object.entries(prefs)) {
  box.checked = localStorage.getItem(`pbxscreen.${name}`) === "1";
  box.addEventListener("change", async () => {
    if (name === "notify" && box.checked && "Notification" in window) {
      const answer = await Notification.requestPermission();
      if (answer !== "granted") box.checked = false;
    }
    localStorage.setItem(`pbxscreen.${name}`, box.checked ? "1" : "0");
  });
}

let audio = null;
function chime() {
  audio = audio || new AudioContext();
  const start = audio.currentTime;
  for (const [offset, freq] of [[0, 880], [0.18, 1320]]) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, start + offset);
    gain.gain.exponentialRampToValueAtTime(0.2, start + offset + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.16);
    osc.connect(gain).connect(audio.destination);
    osc.start(start + offset);
    osc.stop(start + offset + 0.17);
  }
}

function alertNewCall(call) {
  if (prefs.chime.checked) {
    try {
      chime();
    } catch {
      /* audio blocked until the page has been interacted with */
    }
  }
  if (prefs.notify.checked && document.hidden && "Notification" in window
      && Notification.permission === "granted") {
    const note = new Notification(t(gettext("Incoming call from %(caller)s"), { caller: callerLabel(call) }), {
      body: t(gettext("To %(called)s on %(trunk)s"), { called: call.called, trunk: call.trunk }),
      tag: `call-${call.id}`,
    });
    note.onclick = () => window.focus();
  }
}

// --- who is calling, and what the team knows (the card's context) -----------------------------
//
// Everything comes from the call's payload: `caller_name` (a contact's or a late lookup's name)
// and `context` (screening/calls/context.py). Any part may be missing or null (older calls,
// withheld numbers), so every reader below checks the type of what it reads.

const text = (value) => (typeof value === "string" ? value.trim() : "");
const number = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);
const object = (value) => (value && typeof value === "object" && !Array.isArray(value) ? value : null);
const NOTE_ON_CARD_CHARS = 140; // the contact's note, shortened; the whole of it in the tooltip

function callerName(call) {
  const context = object(call.context) || {};
  return text(call.caller_name) || text(object(context.lookup)?.name) || text(object(context.contact)?.name);
}

function callerLabel(call, withheld = gettext("withheld")) {
  const name = callerName(call);
  const caller = call.caller || withheld;
  return name ? `${name} (${caller})` : caller;
}

function ago(ms) {
  const secs = (ms - serverNow()) / 1000; // negative: in the past
  const size = Math.abs(secs);
  if (size < 45) return gettext("just now");
  if (size < 3600) return relative.format(Math.round(secs / 60), "minute");
  if (size < 86400) return relative.format(Math.round(secs / 3600), "hour");
  return relative.format(Math.round(secs / 86400), "day");
}

function show(el, value) {
  if (el.textContent !== value) el.textContent = value;
  el.hidden = !value;
}

function fillContext(li, call) {
  const context = object(call.context) || {};
  const contact = object(context.contact);
  const name = $(".caller-name", li);
  show(name, callerName(call));
  name.dataset.source = object(context.lookup) && !contact ? "lookup" : contact ? "contact" : "";
  show($(".organisation", li), text(contact?.organisation));
  const note = text(contact?.note);
  const noteEl = $(".contact-note", li);
  show(noteEl, note.length > NOTE_ON_CARD_CHARS ? `${note.slice(0, NOTE_ON_CARD_CHARS - 1)}…` : note);
  noteEl.title = note.length > NOTE_ON_CARD_CHARS ? note : "";
  fillPrecedent($(".precedent", li), object(context.precedent));
  fillSuggestion($(".suggestion", li), object(context.suggestion) || object(call.suggestion));
  fillNotes($(".notes", li), Array.isArray(context.notes) ? context.notes : []);
}

// "83 %": with a space, as German, French and Spanish write it (and the card always has).
const percentText = (value) => `${integer(value)} %`;

function percent(probability) {
  return Math.round(Math.min(1, Math.max(0, probability)) * 100);
}

// "Refused 7 of 8 (4 operators), last: spam or sales, by Ann, 2 days ago", then how likely a
// refusal is and how sure that is, then what rules and the fallback policy did (apart: they are
// not people's judgement).
function describePrecedent(p) {
  const parts = [];
  const decided = number(p.decided) || 0;
  if (decided > 0) {
    const operators = number(p.operators) || 0;
    const refused = number(p.refused) || 0;
    let line = operators
      ? t(ngettext("Refused %(refused)s of %(decided)s (%(operators)s operator)",
        "Refused %(refused)s of %(decided)s (%(operators)s operators)", operators), { refused, decided, operators })
      : t(gettext("Refused %(refused)s of %(decided)s"), { refused, decided });
    const last = object(p.last);
    const what = !last ? "" : last.decision === "refuse"
      ? (REASON_LABELS[last.reason] || text(last.reason_label) || gettext("refused")).toLowerCase()
      : last.decision === "accept" ? gettext("accepted") : "";
    if (what) {
      line += `, ${t(gettext("last: %(what)s"), { what })}`;
      if (text(last.by)) line += `, ${t(gettext("by %(name)s"), { name: text(last.by) })}`;
      if (number(last.at) !== null) line += `, ${ago(last.at)}`;
    }
    parts.push(line);
    const probability = number(p.probability);
    if (probability !== null) {
      const refuse = percent(probability);
      const likely = refuse >= 50
        ? t(gettext("refusal likely %(percent)s"), { percent: percentText(refuse) })
        : t(gettext("acceptance likely %(percent)s"), { percent: percentText(100 - refuse) });
      const sure = number(p.sureness) !== null && p.sureness <= 1
        ? `, ${t(gettext("%(percent)s sure"), { percent: percentText(percent(p.sureness)) })}`
        : text(p.sureness) ? `, ${t(gettext("%(level)s certainty"), { level: text(p.sureness) })}` : "";
      const many = t(ngettext("from %(count)s decision", "from %(count)s decisions", decided), { count: decided });
      parts.push(`${likely} (${many}${sure})`);
    }
  }
  const auto = number(p.auto_decided) || 0;
  if (auto > 0) {
    parts.push(t(gettext("rules and fallback refused %(refused)s of %(auto)s"), { refused: number(p.auto_refused) || 0, auto }));
  }
  return parts;
}

function fillPrecedent(el, precedent) {
  const parts = precedent ? describePrecedent(precedent) : [];
  const key = parts.join("\n");
  if (el.dataset.key === key) return;
  el.dataset.key = key;
  el.replaceChildren(...parts.map((part) => Object.assign(document.createElement("span"), { textContent: part })));
  el.hidden = !parts.length;
}

// Only a suggestion: the card says so, and nothing is decided by it.
function fillSuggestion(el, suggestion) {
  const decision = suggestion && ["accept", "refuse"].includes(suggestion.decision) ? suggestion.decision : "";
  el.dataset.decision = decision;
  const words = { accept: gettext("accept"), refuse: gettext("refuse") };
  show(el, decision ? t(gettext("Suggested: %(decision)s (a suggestion from past decisions; you decide)"), { decision: words[decision] }) : "");
}

function fillNotes(list, notes) {
  const usable = notes.map(object).filter((note) => note && text(note.text));
  const key = JSON.stringify(usable.map((n) => [n.id, n.text, n.author, n.at, n.expires_at]));
  if (list.dataset.key !== key) {
    list.dataset.key = key;
    list.replaceChildren(...usable.map(buildNote));
  }
  refreshNotes(list);
}

function buildNote(note) {
  const li = document.createElement("li");
  li.className = "note";
  const body = Object.assign(document.createElement("span"), { className: "note-text", textContent: text(note.text) });
  const meta = Object.assign(document.createElement("span"), { className: "note-meta" });
  if (number(note.at) !== null) li.dataset.at = String(note.at);
  if (number(note.expires_at) !== null) li.dataset.expiresAt = String(note.expires_at);
  li.dataset.author = text(note.author);
  li.append(body, " ", meta);
  return li;
}

// Relative times age and notes expire while a card is on screen: redone every second or so.
function refreshNotes(list) {
  const now = serverNow();
  let shown = 0;
  for (const li of list.children) {
    const expires = li.dataset.expiresAt ? Number(li.dataset.expiresAt) : null;
    li.hidden = expires !== null && expires <= now;
    if (li.hidden) continue;
    shown += 1;
    const bits = [li.dataset.author, li.dataset.at ? ago(Number(li.dataset.at)) : "", expires ? t(gettext("until %(time)s"), { time: clockTime(expires, now) }) : ""];
    const meta = `— ${bits.filter(Boolean).join(", ")}`;
    const el = $(".note-meta", li);
    if (el.textContent !== meta) el.textContent = meta;
  }
  list.hidden = shown === 0;
}

// --- attention: the page's visibility, and the last seconds of a call -------------------------

// The server counts this operator as online only while the dashboard is on screen (and the
// socket answers pings): a tab in the background leaves calls to the fallback policy. The socket
// stays open meanwhile; back on screen, the page reports at once and fetches the truth.
function reportVisibility() {
  send({ type: "visibility", visible: document.visibilityState === "visible" });
}

document.addEventListener("visibilitychange", () => {
  reportVisibility();
  if (document.visibilityState === "visible") {
    requestSnapshot();
    ping();
  }
});

const FINAL_MS = 4000; // the last seconds before a call's last useful moment
const baseTitle = document.title;
const finalAlerted = new Set(); // ids of calls whose last seconds were already announced
const flash = { on: false, at: 0 }; // the title's alternation

function finalChime() {
  // Lower and three times, so it is not mistaken for the new-call chime.
  audio = audio || new AudioContext();
  const start = audio.currentTime;
  for (const offset of [0, 0.14, 0.28]) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = "square";
    osc.frequency.value = 523;
    gain.gain.setValueAtTime(0.0001, start + offset);
    gain.gain.exponentialRampToValueAtTime(0.12, start + offset + 0.01);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.1);
    osc.connect(gain).connect(audio.destination);
    osc.start(start + offset);
    osc.stop(start + offset + 0.11);
  }
}

// On a timer, not on animation frames: frames stop in a background tab, where a flashing title
// is the only thing that can catch the operator's eye.
function attention() {
  const now = serverNow();
  let urgent = null;
  for (const call of state.calls.values()) {
    const left = call.last_useful - now;
    const final = call.status === "pending" && !state.sending.has(call.id) && left > 0 && left <= FINAL_MS;
    pendingList.querySelector(`li.call[data-id="${call.id}"]`)?.classList.toggle("final-seconds", final);
    if (!final) continue;
    if (!finalAlerted.has(call.id)) {
      finalAlerted.add(call.id);
      if (prefs.chime.checked) {
        try {
          finalChime();
        } catch {
          /* audio blocked until the page has been interacted with */
        }
      }
    }
    if (!urgent || left < urgent.left) urgent = { call, left };
  }
  for (const id of finalAlerted) if (!state.calls.has(id)) finalAlerted.delete(id);
  // Flipped per half second, or per run where a background tab runs timers only once a second.
  if (!urgent) flash.on = false;
  else if (now - flash.at >= 450) Object.assign(flash, { on: !flash.on, at: now });
  const title = flash.on
    ? `⚠ ${t(gettext("Call from %(caller)s"), { caller: callerLabel(urgent.call) })} ${Math.ceil(urgent.left / 1000)} s` : baseTitle;
  if (document.title !== title) document.title = title;
  document.body.dataset.finalSeconds = urgent ? String(urgent.call.id) : "";
  for (const list of pendingList.querySelectorAll(".notes")) refreshNotes(list);
}
setInterval(attention, 250);

window.pbxscreen = state; // for people debugging in the console, and for browser tests
connect();
requestAnimationFrame(loop);
