// The raftkv dashboard: follows the /events stream of every member and draws the cluster as it changes.
// The fragment of the page's address may carry `token` (the cluster token, for membership changes and the
// fault buttons), `control` (the URL of the `raftkv cluster` supervisor, which runs the fault buttons) and
// `client_token` (for a cluster whose client API needs one). A fragment never reaches a server.
"use strict";

const fragment = new URLSearchParams(location.hash.slice(1));
const clusterToken = fragment.get("token");
const controlUrl = fragment.get("control");
const clientToken = fragment.get("client_token");
const here = location.origin;

const RECONNECT_MS = 1000;
const SILENT_MS = 3000; // a stream sends traffic every second: longer silence means a stopped or cut-off node
const TIMELINE_LENGTH = 200;
const MAX_PULSES = 6; // dots drawn per link and second, whatever the message count
const PULSE_COLORS = { vote: "#ef6c00", append: "#1565c0", heartbeat: "#90a4ae", other: "#8d6e63" };

const nodes = new Map(); // id -> {id, url, state, up, silent, traffic, process}
const followed = new Set(); // URLs whose stream is followed
let drawScheduled = false;

// --- reading the streams ------------------------------------------------------------------------------

function node(id, url) {
  if (!nodes.has(id)) {
    nodes.set(id, { id, url, state: null, up: false, silent: false, lastEvent: 0, traffic: [], process: null });
  }
  const entry = nodes.get(id);
  if (url) entry.url = url;
  return entry;
}

function follow(url) {
  if (followed.has(url)) return;
  followed.add(url);
  stream(url);
}

async function stream(url) {
  const headers = clientToken ? { Authorization: `Bearer ${clientToken}` } : {};
  for (;;) {
    const abort = new AbortController();
    let id = null;
    const watchdog = setInterval(() => {
      const entry = id && nodes.get(id);
      if (entry && entry.up && Date.now() - entry.lastEvent > SILENT_MS && !entry.silent) {
        entry.silent = true;
        note(`${id} is silent`);
        schedule();
      }
      if (entry && Date.now() - entry.lastEvent > 2 * SILENT_MS) abort.abort();
    }, 500);
    try {
      const answer = await fetch(`${url}/events`, { headers, signal: abort.signal, cache: "no-store" });
      if (!answer.ok) throw new Error(`${answer.status}`);
      const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const seen = handle(buffer.slice(0, end), url);
          buffer = buffer.slice(end + 2);
          if (seen) id = seen;
        }
      }
    } catch (error) {
      // refused, reset or aborted: the node is down (or paused); try again shortly
    } finally {
      clearInterval(watchdog);
    }
    const entry = id && nodes.get(id);
    if (entry && entry.up) {
      entry.up = false;
      entry.traffic = [];
      note(`${id} is unreachable`);
      schedule();
    }
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

function handle(block, url) {
  let kind = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) kind = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return null;
  const event = JSON.parse(data);
  if (kind === "state") return onState(event, url);
  const entry = [...nodes.values()].find((n) => n.url === url);
  if (!entry) return null;
  entry.lastEvent = Date.now();
  if (kind === "election") onElection(entry.id, event);
  if (kind === "traffic") onTraffic(entry, event);
  return entry.id;
}

function onState(state, url) {
  const entry = node(state.id, url);
  if (!entry.up || entry.silent) note(entry.up ? `${state.id} speaks again` : `${state.id} is up`);
  entry.state = state;
  entry.up = true;
  entry.silent = false;
  entry.lastEvent = Date.now();
  for (const member of state.members) {
    node(member.id, member.url);
    follow(member.url);
  }
  schedule();
  return state.id;
}

function onElection(id, step) {
  const text = {
    "pre-campaign": `${id} asks for pre-votes (in term ${step.term})`,
    campaign: `${id} campaigns in term ${step.term}`,
    voted: `${id} votes for ${step.candidate} in term ${step.term}`,
    leader: `${id} becomes the leader of term ${step.term}`,
    follower: `${id} follows ${step.leader ?? "no leader yet"} in term ${step.term}`,
  }[step.step];
  note(text, step.step === "leader" ? "leader" : "");
}

function onTraffic(entry, traffic) {
  entry.traffic = traffic.counts;
  for (const count of traffic.counts) {
    if (count.direction === "sent") pulse(entry.id, count.peer, count.kind, count.count);
  }
  schedule();
}

// --- what the cluster looks like ------------------------------------------------------------------------

function leader() {
  let best = null;
  for (const entry of nodes.values()) {
    if (entry.up && !entry.silent && entry.state && entry.state.role === "leader") {
      if (!best || entry.state.term > best.state.term) best = entry;
    }
  }
  return best;
}

function memberIds() {
  // The configuration as the leader sees it (else as the freshest node sees it), and every process the
  // supervisor runs: a removed or joining node still shows.
  const view = leader() || [...nodes.values()].filter((n) => n.state).sort((a, b) => b.state.term - a.state.term)[0];
  const ids = new Set(view ? view.state.members.map((m) => m.id) : []);
  for (const entry of nodes.values()) if (entry.process) ids.add(entry.id);
  return [...ids].sort();
}

function isMember(id) {
  const view = leader();
  return !view || view.state.members.some((m) => m.id === id);
}

// --- drawing -------------------------------------------------------------------------------------------

function schedule() {
  if (drawScheduled) return;
  drawScheduled = true;
  requestAnimationFrame(() => {
    drawScheduled = false;
    draw();
  });
}

function draw() {
  const ids = memberIds();
  const chief = leader();
  const summary = document.getElementById("summary");
  summary.dataset.leader = chief ? chief.id : "";
  summary.textContent = chief
    ? `leader ${chief.id} in term ${chief.state.term} · ${ids.length} members · commit ${chief.state.commit}`
    : `no leader · ${ids.length} members`;
  drawRing(ids);
  const cards = document.getElementById("members");
  const wanted = new Set(ids);
  for (const card of [...cards.children]) if (!wanted.has(card.dataset.member)) card.remove();
  ids.forEach((id, position) => {
    let card = cards.querySelector(`[data-member="${id}"]`);
    if (!card) card = newCard(id);
    if (cards.children[position] !== card) cards.insertBefore(card, cards.children[position] || null);
    fillCard(card, nodes.get(id) || node(id));
  });
}

function condition(entry) {
  if (entry.process && entry.process.state === "killed") return "down";
  if (entry.process && entry.process.state === "paused") return "paused";
  if (!entry.up) return "down";
  if (entry.silent) return "paused";
  return entry.state.role;
}

function newCard(id) {
  const card = document.createElement("article");
  card.className = "member";
  card.dataset.member = id;
  card.innerHTML = `
    <h3><span class="id"></span><span class="role"></span><span class="url"></span></h3>
    <dl>
      <dt>term</dt><dd class="term"></dd><dt>vote</dt><dd class="vote"></dd>
      <dt>leader</dt><dd class="leader"></dd><dt>last</dt><dd class="last"></dd>
      <dt>commit</dt><dd class="commit"></dd><dt>applied</dt><dd class="applied"></dd>
      <dt>snapshot</dt><dd class="snapshot"></dd><dt>voter</dt><dd class="voter"></dd>
    </dl>
    <div class="log" aria-label="the tail of the log"></div>
    <div class="traffic"></div>
    <div class="buttons"></div>`;
  const buttons = card.querySelector(".buttons");
  const actions = controlUrl && clusterToken ? ["kill", "restart", "pause", "resume", "partition", "heal"] : [];
  for (const action of actions) buttons.append(button(action, () => control(id, action)));
  if (clusterToken) buttons.append(button("remove", () => removeMember(id)));
  return card;
}

function button(action, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = action;
  element.dataset.action = action;
  element.addEventListener("click", onClick);
  return element;
}

function fillCard(card, entry) {
  const state = entry.state;
  const shown = condition(entry);
  card.className = `member ${state ? shown : "down"}`;
  card.dataset.role = state && entry.up && !entry.silent ? state.role : shown;
  const set = (selector, text) => (card.querySelector(selector).textContent = text);
  const partitioned = entry.process && entry.process.partitioned ? " · partitioned" : "";
  set(".id", entry.id);
  set(".role", `${shown}${partitioned}${isMember(entry.id) ? "" : " · not a member"}`);
  set(".url", entry.url || "");
  if (!state) return;
  set(".term", state.term);
  set(".vote", state.vote ?? "–");
  set(".leader", state.leader ?? "–");
  set(".last", `${state.last_index} (term ${state.last_term})`);
  set(".commit", state.commit);
  set(".applied", state.applied);
  set(".snapshot", state.snapshot_index);
  const me = state.members.find((m) => m.id === entry.id);
  set(".voter", me ? (me.voter ? "yes" : "learner") : "no");
  const log = card.querySelector(".log");
  log.replaceChildren(
    ...state.log.map((e) => {
      const box = document.createElement("div");
      box.className = `entry ${e.kind}${e.index <= state.commit ? " committed" : ""}${e.index <= state.applied ? " applied" : ""}`;
      box.title = `index ${e.index}, term ${e.term}, ${e.kind}${e.index <= state.commit ? ", committed" : ""}`;
      box.innerHTML = `<div>#${e.index}</div><div class="term">t${e.term}</div>`;
      return box;
    }),
  );
  const sent = entry.traffic.filter((c) => c.direction === "sent").reduce((sum, c) => sum + c.count, 0);
  const received = entry.traffic.filter((c) => c.direction === "received").reduce((sum, c) => sum + c.count, 0);
  const kinds = {};
  for (const c of entry.traffic) kinds[c.kind] = (kinds[c.kind] || 0) + c.count;
  const detail = Object.entries(kinds).map(([kind, count]) => `${kind} ${count}`).join(", ");
  set(".traffic", `messages/s: ${sent} sent, ${received} received${detail ? ` (${detail})` : ""}`);
}

const RING_RADIUS = 110;
const NODE_RADIUS = 26;

function position(ids, id) {
  const angle = (2 * Math.PI * ids.indexOf(id)) / ids.length - Math.PI / 2;
  return [RING_RADIUS * Math.cos(angle), RING_RADIUS * Math.sin(angle)];
}

function svg(tag, attributes) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  return element;
}

let ringIds = [];

function drawRing(ids) {
  ringIds = ids;
  const ring = document.getElementById("ring-base");
  ring.replaceChildren();
  ids.forEach((a, i) => ids.slice(i + 1).forEach((b) => {
    const [x1, y1] = position(ids, a);
    const [x2, y2] = position(ids, b);
    ring.append(svg("line", { class: "link", x1, y1, x2, y2 }));
  }));
  const colors = { leader: "#2e7d32", candidate: "#ef6c00", "pre-candidate": "#ef6c00", follower: "#1565c0", down: "#9e9e9e", paused: "#6a1b9a" };
  for (const id of ids) {
    const entry = nodes.get(id) || node(id);
    const [x, y] = position(ids, id);
    const shown = entry.state ? condition(entry) : "down";
    const group = svg("g", { class: "node", "data-node": id });
    group.append(svg("circle", { cx: x, cy: y, r: NODE_RADIUS, fill: colors[shown] || colors.follower }));
    const name = svg("text", { x, y });
    name.textContent = id;
    const label = svg("text", { x, y: y + NODE_RADIUS + 11, class: "label" });
    label.textContent = entry.state ? `term ${entry.state.term}${shown === "leader" ? " ★" : ""}` : "";
    group.append(name, label);
    ring.append(group);
  }
}

function pulse(from, to, kind, count) {
  if (!ringIds.includes(from) || !ringIds.includes(to)) return;
  const family = /Vote/.test(kind) ? "vote" : kind === "Heartbeat" ? "heartbeat" : /Append|Snapshot/.test(kind) ? "append" : "other";
  const [x1, y1] = position(ringIds, from);
  const [x2, y2] = position(ringIds, to);
  const layer = document.getElementById("pulses");
  const dots = Math.min(count, MAX_PULSES);
  for (let i = 0; i < dots; i++) {
    const dot = svg("circle", { class: "pulse", r: 4, cx: x1, cy: y1, fill: PULSE_COLORS[family] });
    layer.append(dot);
    const flight = dot.animate(
      [{ transform: "translate(0, 0)" }, { transform: `translate(${x2 - x1}px, ${y2 - y1}px)` }],
      { duration: 600, delay: (1000 * i) / dots, fill: "both" },
    );
    flight.onfinish = () => dot.remove();
  }
}

function note(text, kind = "") {
  const item = document.createElement("li");
  if (kind) item.className = kind;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  item.append(time, text);
  const timeline = document.getElementById("timeline");
  timeline.prepend(item);
  while (timeline.children.length > TIMELINE_LENGTH) timeline.lastChild.remove();
}

function notice(text) {
  document.getElementById("notice").textContent = text;
}

// --- the buttons -----------------------------------------------------------------------------------------

async function call(method, url, body) {
  const headers = { Authorization: `Bearer ${clusterToken}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const reply = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(reply.error || `${answer.status}`);
  return reply;
}

async function act(what, action) {
  notice(`${what}…`);
  try {
    await action();
    notice("");
    note(what, "action");
  } catch (error) {
    notice(`${what} failed: ${error.message}`);
  }
}

function control(id, action) {
  return act(`${action} ${id}`, async () => showProcesses(await call("POST", `${controlUrl}/nodes/${id}/${action}`)));
}

function removeMember(id) {
  return act(`remove ${id} from the cluster`, () => call("DELETE", `${here}/cluster/members/${encodeURIComponent(id)}`));
}

function addMember() {
  return act("add a member", async () => showProcesses(await call("POST", `${controlUrl}/nodes`)));
}

function showProcesses(reply) {
  for (const process of reply.nodes) {
    node(process.id, process.url).process = process;
    follow(process.url);
  }
  schedule();
}

async function watchProcesses() {
  for (;;) {
    try {
      showProcesses(await call("GET", `${controlUrl}/nodes`));
    } catch (error) {
      notice(`the cluster supervisor does not answer: ${error.message}`);
    }
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

if (controlUrl && clusterToken) {
  document.getElementById("cluster-controls").hidden = false;
  document.getElementById("add-member").addEventListener("click", addMember);
  watchProcesses();
}
follow(here);
