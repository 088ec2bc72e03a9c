// Supervisor live view: re-reads a small JSON state every few seconds (read-only, no socket).
import { gettext, ngettext, seconds, t, timeNow } from "./l10n.js";

const url = new URL("state.json", window.location.href);
const refreshMs = JSON.parse(document.getElementById("refresh-seconds").textContent) * 1000;
const status = document.getElementById("refresh-state");
let offset = JSON.parse(document.getElementById("server-time").textContent) - Date.now();

function cell(tag, text, cls) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (cls) el.className = cls;
  if (tag === "th") el.scope = "row";
  return el;
}

function renderOnline(people) {
  renderPeople("online", people, gettext("No operator is online: calls are left to each trunk's fallback policy."));
}

// Connected with the dashboard in a background tab: not online (older servers send no list).
function renderHidden(people) {
  renderPeople("hidden", people || [], gettext("Nobody."));
}

function renderPeople(id, people, emptyText) {
  const list = document.getElementById(id);
  document.getElementById(`${id}-count`).textContent = people.length;
  list.replaceChildren();
  if (!people.length) {
    list.append(cell("li", emptyText, "empty"));
    return;
  }
  for (const p of people) {
    const li = document.createElement("li");
    const tabs = t(ngettext("%(tabs)s tab", "%(tabs)s tabs", p.sockets), { tabs: p.sockets });
    const extra = p.groups.join(", ") + (p.sockets > 1 ? ` · ${tabs}` : "");
    li.append(cell("strong", p.name), " ", cell("span", extra, "muted"));
    list.append(li);
  }
}

function renderCalls(calls) {
  const body = document.getElementById("waiting");
  document.getElementById("waiting-count").textContent = calls.length;
  body.replaceChildren();
  if (!calls.length) {
    const tr = document.createElement("tr");
    tr.className = "empty-row";
    const td = cell("td", gettext("No calls waiting."));
    td.colSpan = 5;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const c of calls) {
    const tr = document.createElement("tr");
    tr.dataset.id = c.id;
    const left = cell("td", "…", "num");
    left.dataset.lastUseful = c.last_useful;
    const state = c.status_label + (c.decided_by ? ` (${c.decided_by})` : "");
    tr.append(cell("th", c.caller || gettext("withheld")), cell("td", c.called), cell("td", c.trunk), cell("td", state), left);
    body.append(tr);
  }
  tick();
}

function renderLink(link) {
  const el = document.getElementById("link-state");
  el.dataset.state = link.state;
  el.textContent = link.message;
}

function tick() {
  const now = Date.now() + offset;
  for (const td of document.querySelectorAll("#waiting td[data-last-useful]")) {
    const left = Math.max(0, (Number(td.dataset.lastUseful) - now) / 1000);
    td.textContent = seconds(left);
  }
}

async function refresh() {
  try {
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const state = await response.json();
    offset = state.server_time - Date.now();
    renderOnline(state.online);
    renderHidden(state.hidden);
    renderCalls(state.calls);
    renderLink(state.link);
    status.dataset.state = "open";
    status.textContent = t(gettext("Live, updated %(time)s"), { time: timeNow() });
  } catch (err) {
    status.dataset.state = "closed";
    status.textContent = t(gettext("Not updating (%(error)s); retrying"), { error: err.message });
  }
}

tick();
setInterval(tick, 200);
setInterval(refresh, refreshMs);
document.body.dataset.supervisor = "ready";
