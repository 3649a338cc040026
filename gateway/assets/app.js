// nats-mesh live page: renders the discovered topology with Mermaid and colours each
// node by its latest status event from GET /events (Server-Sent Events).
'use strict';

const HOLD_MS = 3000;          // a final state shows this long, then the node returns to idle
const RUNNING_MAX_MS = 60000;  // a running node with no final event returns to idle after this
const LOG_MAX = 200;
const ACTIVATIONS_KEPT = 200;  // recent activations whose node states the page keeps (filter)
// Past these, Mermaid refuses to draw (its maxEdges and maxTextSize): the page lists the
// nodes instead.
const DIAGRAM_MAX_EDGES = 400;
const DIAGRAM_MAX_SOURCE = 40000;
const RESULT_SHOWN = 160;      // characters of a function result shown on the page
const STATE_COLOR = { running: '#ffe600', ok: '#39ff14', failed: '#ff2e63', manual: '#00e5ff', idle: '#1b1f3a' };

const $ = (id) => document.getElementById(id);
const mesh = {
  topology: { nodes: [], edges: [] },
  started: false,        // the stream and the lists are running (reads open, or a session)
  source: '',
  elements: new Map(),   // node name -> SVG <g> of the node
  latest: new Map(),     // node name -> { state, color, activation }
  timers: new Map(),
  // activation id -> Map(node name -> { state, color }), newest last, at most ACTIVATIONS_KEPT
  activations: new Map(),
  filter: '',            // when set, the diagram and the log show only this activation
  counts: { events: 0, running: 0, ok: 0, failed: 0, manual: 0, activations: 0 },
  seen: [],              // [name, state] applied to the diagram, newest last (read by tests)
  renders: 0,
};
window.mesh = mesh;

mermaid.initialize({
  startOnLoad: false,
  securityLevel: 'strict',
  theme: 'dark',
  flowchart: { curve: 'basis', htmlLabels: true },
  themeVariables: { fontFamily: 'ui-monospace, monospace', lineColor: '#b026ff' },
});

async function renderTopology(topology) {
  mesh.topology = topology;
  adoptKnownStates(topology);
  fillSelects(topology.nodes.map((n) => n.name), topology.entry);
  if (topology.mermaid === mesh.source) return;
  mesh.source = topology.mermaid;
  if (topology.nodes.length === 0) {
    $('diagram').replaceChildren(hint('no nodes discovered yet: start some with `handlers`'));
    return;
  }
  if (topology.edges.length > DIAGRAM_MAX_EDGES || topology.mermaid.length > DIAGRAM_MAX_SOURCE) {
    renderList(topology, `${topology.nodes.length} nodes and ${topology.edges.length} edges are more than a diagram can show: listed instead`);
    return;
  }
  let svg;
  try {
    ({ svg } = await mermaid.render(`mesh-svg-${++mesh.renders}`, topology.mermaid));
  } catch (err) {
    renderList(topology, `the diagram could not be drawn (${err && err.message ? err.message : err}): listed instead`);
    return;
  }
  $('diagram').innerHTML = svg; // Mermaid output, rendered with securityLevel "strict"
  if (topology.truncated) $('diagram').prepend(hint(topology.truncated));
  const byId = new Map(topology.nodes.map((n) => [n.mermaid_id, n]));
  mesh.elements.clear();
  for (const el of $('diagram').querySelectorAll('g.node')) {
    const id = el.dataset.id || (el.id.match(/flowchart-(n\d+)-\d+$/) || [])[1];
    const node = byId.get(id);
    if (!node) continue;
    el.dataset.node = node.name;
    el.classList.toggle('offline', node.instances.length === 0);
    mesh.elements.set(node.name, el);
  }
  repaint();
  showStats(topology);
  showConfig();
}

/** The graph as a list (each node with its downstream), coloured like the diagram. */
function renderList(topology, note) {
  const list = document.createElement('ul');
  list.className = 'node-list';
  mesh.elements.clear();
  for (const node of topology.nodes) {
    const li = document.createElement('li');
    li.className = 'node';
    li.dataset.node = node.name;
    const label = document.createElement('span');
    label.className = 'nodeLabel';
    label.textContent = node.name;
    li.append(label, node.downstream.length ? ` → ${node.downstream.join(', ')}` : '');
    li.classList.toggle('offline', node.instances.length === 0);
    list.append(li);
    mesh.elements.set(node.name, li);
  }
  $('diagram').replaceChildren(hint(note), list);
  if (topology.truncated) $('diagram').prepend(hint(topology.truncated));
  repaint();
  showStats(topology);
  showConfig();
}

/** Last known states from the gateway (the topology carries each node's latest event). */
function adoptKnownStates(topology) {
  for (const node of topology.nodes) {
    if (!node.state || mesh.latest.has(node.name)) continue;
    const age = Date.now() - Date.parse(node.last_at || '');
    if (node.state === 'running' && !(age < RUNNING_MAX_MS)) continue;
    mesh.latest.set(node.name, { state: node.state, color: node.color || null, activation: null });
    schedule(node.name, node.state);
  }
}

/** Paints every node from what the current view shows: everything, or one activation. */
function repaint() {
  const view = mesh.filter ? mesh.activations.get(mesh.filter) || new Map() : mesh.latest;
  for (const name of mesh.elements.keys()) {
    const s = view.get(name);
    draw(name, s ? s.state : 'idle', s ? s.color : null, s && !mesh.filter ? s.activation : mesh.filter || null);
  }
}

function hint(text) {
  const p = document.createElement('p');
  p.className = 'hint';
  p.textContent = text;
  return p;
}

function fillSelects(names, entry) {
  for (const id of ['activate-node', 'color-node', 'config-node']) {
    const select = $(id);
    const first = select.options.length === 0;
    const current = select.value;
    if ([...select.options].map((o) => o.value).join() === names.join()) continue;
    select.replaceChildren(...names.map((n) => new Option(n, n)));
    if (first && names.includes(entry)) select.value = entry;
    else if (names.includes(current)) select.value = current;
  }
}

/** Records a node's new state (for the whole view) and draws it unless a filter hides it. */
function paint(name, state, color, activation, record = true) {
  mesh.latest.set(name, { state, color, activation });
  if (record) mesh.seen.push([name, state]);
  if (!mesh.filter) draw(name, state, color, activation);
}

/** Colours one node's shape: fill by state, outline by activation (so two at once differ). */
function draw(name, state, color, activation) {
  const el = mesh.elements.get(name);
  if (!el) return;
  el.dataset.state = state;
  if (activation && state !== 'idle') el.dataset.activation = activation;
  else delete el.dataset.activation;
  const fill = color || STATE_COLOR[state] || STATE_COLOR.idle;
  if (el.tagName === 'LI') {
    el.style.setProperty('border-left-color', fill);
    el.style.setProperty('outline', activation && state !== 'idle' ? `2px solid ${activationColor(activation)}` : '');
    return;
  }
  const outline = activation && state !== 'idle' ? activationColor(activation) : (state === 'idle' ? '' : fill);
  for (const shape of el.querySelectorAll('rect, polygon, circle, path')) {
    shape.style.setProperty('fill', fill, 'important');
    shape.style.setProperty('stroke', outline, 'important');
    shape.style.setProperty('stroke-width', activation && state !== 'idle' ? '4px' : '', 'important');
  }
  for (const label of el.querySelectorAll('.nodeLabel, span, text')) {
    label.style.setProperty('color', state === 'idle' ? '' : '#07070f', 'important');
    label.style.setProperty('fill', state === 'idle' ? '' : '#07070f', 'important');
  }
}

/** A colour of its own for each activation id (a hue from a hash of the id). */
function activationColor(id) {
  let h = 2166136261;
  for (let i = 0; i < id.length; i += 1) h = Math.imul(h ^ id.charCodeAt(i), 16777619);
  return `hsl(${(h >>> 0) % 360}, 95%, 62%)`;
}

/** Final states return to idle after HOLD_MS; a manual colour stays until the node's next event. */
function schedule(name, state) {
  clearTimeout(mesh.timers.get(name));
  if (state === 'idle' || state === 'manual') return;
  const hold = state === 'running' ? RUNNING_MAX_MS : HOLD_MS;
  mesh.timers.set(name, setTimeout(() => paint(name, 'idle', null, null), hold));
}

/** Remembers an event under its activation; returns true for an activation not seen before. */
function remember(e) {
  if (!e.activation_id) return false;
  let nodes = mesh.activations.get(e.activation_id);
  const fresh = !nodes;
  if (fresh) {
    nodes = new Map();
    mesh.activations.set(e.activation_id, nodes);
    while (mesh.activations.size > ACTIVATIONS_KEPT) {
      mesh.activations.delete(mesh.activations.keys().next().value);
    }
  }
  nodes.set(e.node, { state: e.state, color: e.color || null });
  return fresh;
}

function onStatus(event) {
  let e;
  try { e = JSON.parse(event.data); } catch { return; }
  mesh.counts.events += 1;
  if (e.state in mesh.counts) mesh.counts[e.state] += 1;
  if (remember(e)) mesh.counts.activations += 1;
  const color = e.state === 'running' || e.state === 'manual' ? e.color : null;
  paint(e.node, e.state, color, e.activation_id || null);
  if (mesh.filter && mesh.filter === e.activation_id) draw(e.node, e.state, color, e.activation_id);
  schedule(e.node, e.state);
  log(e.state, [
    new Date(e.at).toLocaleTimeString(), e.node, e.state,
    e.code ?? '', e.elapsed_ms != null ? `${e.elapsed_ms}ms` : '',
    e.result_bytes != null ? `result ${e.result_bytes} B` : '',
    e.relayed_by ? `via ${e.relayed_by}` : '',
  ].filter((x) => x !== '').join(' '), e.activation_id);
  showCounts();
}

/** One line of the event log; events of an activation carry its id, colour and a filter link. */
function log(level, text, activation) {
  const li = document.createElement('li');
  li.className = level;
  li.append(text); // never HTML: events come from anyone on the bus
  if (activation) {
    li.dataset.activation = activation;
    li.style.setProperty('--activation', activationColor(activation));
    const link = document.createElement('button');
    link.type = 'button';
    link.className = 'activation';
    link.textContent = activation;
    link.title = 'show only this activation';
    link.addEventListener('click', () => setFilter(mesh.filter === activation ? '' : activation));
    const inspect = document.createElement('button');
    inspect.type = 'button';
    inspect.className = 'inspect';
    inspect.textContent = 'inspect';
    inspect.title = 'where its time went (kept activations only)';
    inspect.addEventListener('click', () => inspectActivation(activation));
    li.append(' ', link, inspect);
  }
  li.hidden = !!mesh.filter && activation !== mesh.filter;
  const list = $('log');
  list.prepend(li);
  while (list.children.length > LOG_MAX) list.lastElementChild.remove();
}

/** Shows one activation only (its node states on the diagram, its lines in the log), or all. */
function setFilter(activation) {
  mesh.filter = activation;
  $('filter').value = activation;
  $('filter-clear').hidden = !activation;
  for (const li of $('log').children) li.hidden = !!activation && li.dataset.activation !== activation;
  repaint();
}

function showCounts() {
  for (const [k, v] of Object.entries(mesh.counts)) $(`count-${k}`).textContent = v;
}

function connect() {
  const source = new EventSource('/events');
  const conn = $('conn');
  source.onopen = () => { conn.dataset.state = 'open'; conn.textContent = 'live'; };
  source.onerror = () => {
    conn.dataset.state = 'reconnecting';
    conn.textContent = 'reconnecting…';
  };
  source.addEventListener(MESH_EVENTS.status, onStatus);
  source.addEventListener(MESH_EVENTS.topology, (event) => {
    try { renderTopology(JSON.parse(event.data)); } catch (err) { log('notice', `bad topology: ${err}`); }
  });
  source.addEventListener(MESH_EVENTS.bus, (event) => {
    try { showBus(JSON.parse(event.data).connected); } catch { /* ignore */ }
  });
  source.addEventListener(MESH_EVENTS.lagged, (event) => {
    let m = 'fell behind the event stream';
    try { m = JSON.parse(event.data).message; } catch { /* keep default */ }
    log('notice', m);
  });
}

function showBus(connected) {
  const bus = $('bus');
  const before = bus.dataset.state;
  if (before === (connected ? 'up' : 'down')) return;
  bus.dataset.state = connected ? 'up' : 'down';
  bus.textContent = connected ? 'bus up' : 'bus down';
  if (before === 'unknown') return; // the first state is no news
  log('notice', connected ? 'the gateway is connected to NATS again' : 'the gateway lost NATS: activations answer 503 until it is back');
}

async function pollBus() {
  const bus = $('bus');
  try {
    const r = await fetch('/readyz', { cache: 'no-store' });
    const h = await r.json();
    showBus(h.nats_connected);
    $('gateway-id').textContent = h.gateway_id;
  } catch {
    bus.dataset.state = 'down';
    bus.textContent = 'gateway unreachable';
  }
}

/** The API token typed on this page, kept for the tab only (sessionStorage). */
function token() {
  try { return sessionStorage.getItem('mesh-token') || ''; } catch { return ''; }
}

async function send(method, url, body, output) {
  output.className = 'result';
  output.textContent = '…';
  try {
    const headers = { 'content-type': 'application/json' };
    if (token()) headers.authorization = `Bearer ${token()}`;
    const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401) $('token-form').hidden = false;
    const data = await r.json().catch(() => ({}));
    output.className = `result ${r.ok ? 'ok' : 'failed'}`;
    output.textContent = `${r.status} ${data.outcome || data.state || data.error || ''} ${data.elapsed_ms != null ? `${data.elapsed_ms} ms` : ''} ${data.message && !r.ok ? `: ${data.message}` : ''}`;
    return data;
  } catch (err) {
    output.className = 'result failed';
    output.textContent = `request failed: ${err}`;
    return null;
  }
}

/** A JSON value as at most RESULT_SHOWN characters of text (shown with textContent). */
function short(value) {
  const text = JSON.stringify(value);
  return text.length > RESULT_SHOWN ? `${text.slice(0, RESULT_SHOWN)}…` : text;
}

/** Logs the result of every node of a reply tree that has one, root last (newest first). */
function logResults(reply) {
  const stack = [reply];
  const found = [];
  while (stack.length) {
    const r = stack.pop();
    if (r && r.result !== undefined) found.push(r);
    for (const c of (r && r.children) || []) stack.push(c);
  }
  for (const r of found.reverse()) log('result', `${r.node} result ${short(r.result)}`);
}

$('activate-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const body = { node: $('activate-node').value || undefined };
  if ($('activate-use-color').checked) body.color = $('activate-color').value;
  const t = parseInt($('activate-timeout').value, 10);
  if (t > 0) body.timeout_ms = t;
  const output = $('activate-output');
  output.textContent = '';
  const input = $('activate-input').value.trim();
  if (input) {
    try { body.input = JSON.parse(input); } catch (err) {
      output.textContent = `input is not JSON: ${err.message}`;
      return;
    }
  }
  const reply = await send('POST', '/activate', body, $('activate-result'));
  if (reply && reply.node) {
    setTimeout(loadRecent, 500); // kept just after its answer
    logResults(reply);
    if (reply.result !== undefined) output.textContent = `result ${short(reply.result)}`;
  }
});

$('color-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const node = $('color-node').value;
  if (!node) return;
  await send('PUT', `/nodes/${encodeURIComponent(node)}/color`, { color: $('color-value').value }, $('color-result'));
});

$('clear-log').addEventListener('click', () => $('log').replaceChildren());

/** The settings form shows the selected node's values in force (from the topology). */
function showConfig() {
  const node = mesh.topology.nodes.find((n) => n.name === $('config-node').value);
  if (!node) return;
  $('config-rate').value = node.fail_rate;
  $('config-rate-shown').textContent = node.fail_rate;
  $('config-work').value = node.work_ms;
}
$('config-node').addEventListener('change', showConfig);
$('config-rate').addEventListener('input', () => { $('config-rate-shown').textContent = $('config-rate').value; });
$('config-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const node = $('config-node').value;
  if (!node) return;
  const body = { fail_rate: parseFloat($('config-rate').value) };
  const work = parseInt($('config-work').value, 10);
  if (work >= 0) body.work_ms = work;
  await send('PUT', `/nodes/${encodeURIComponent(node)}/config`, body, $('config-result'));
});
$('config-reset').addEventListener('click', async () => {
  const node = $('config-node').value;
  if (!node) return;
  await send('DELETE', `/nodes/${encodeURIComponent(node)}/config`, undefined, $('config-result'));
  refreshTopology();
});

/** /topology now and then: stats and live settings change without a topology event. */
async function refreshTopology() {
  try {
    const r = await fetch('/topology', { cache: 'no-store' });
    if (!r.ok) return;
    const t = await r.json();
    t.mermaid = mesh.source; // the same drawing: only the values changed
    mesh.topology = t;
    showStats(t);
    if (document.activeElement !== $('config-rate') && document.activeElement !== $('config-work')) showConfig();
  } catch { /* the stream's reconnect says so */ }
}

/** Each node's stats from $SRV.STATS and settings in force, as its tooltip. */
function showStats(topology) {
  for (const node of topology.nodes) {
    const el = mesh.elements.get(node.name);
    if (!el) continue;
    const s = node.stats;
    const text = `${node.name} (${node.kind || 'node'}): work ${node.work_ms} ms, fail rate ${node.fail_rate}`
      + (s ? `; ${s.requests} requests, ${s.errors} errors, ${s.average_ms.toFixed(1)} ms average` : '');
    el.dataset.stats = text;
    if (el.tagName === 'LI') {
      el.title = text;
      continue;
    }
    let title = el.querySelector(':scope > title');
    if (!title) {
      title = document.createElementNS('http://www.w3.org/2000/svg', 'title');
      el.prepend(title);
    }
    title.textContent = text;
  }
}
$('token-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try { sessionStorage.setItem('mesh-token', $('token').value.trim()); } catch { /* storage off */ }
  $('token').value = '';
  $('token-result').textContent = token() ? 'token kept for this tab' : 'token cleared';
  if (mesh.started || !token()) return;
  // Private reads: the token opens a session (an HttpOnly cookie EventSource sends too).
  const r = await fetch('/session', { method: 'POST', headers: { authorization: `Bearer ${token()}` } }).catch(() => null);
  if (r && r.ok) start();
  else $('token-result').textContent = 'that token does not open this gateway\'s reads';
});
if (token()) $('token-form').hidden = false;
$('filter').addEventListener('change', () => setFilter($('filter').value.trim()));
$('filter-clear').addEventListener('click', () => setFilter(''));

/* ---- activation inspector: GET /activations/{id} as a waterfall ---- */

/** The reply tree as rows (depth first, children in order) with start and end in ms. */
function waterfallRows(record) {
  // Each node's start: when the gateway received its `running` event (in order, so a
  // node reached twice takes its marks in turn); its length: its own elapsed_ms.
  const marks = new Map();
  for (const m of record.timeline || []) {
    if (m.state !== 'running') continue;
    if (!marks.has(m.node)) marks.set(m.node, []);
    marks.get(m.node).push(m.offset_us / 1000);
  }
  const rows = [];
  const visit = (reply, depth, parentStart) => {
    const queue = marks.get(reply.node);
    const start = queue && queue.length ? queue.shift() : parentStart;
    const row = { reply, depth, start, end: start + reply.elapsed_ms, children: [] };
    rows.push(row);
    for (const child of reply.children || []) row.children.push(visit(child, depth + 1, start));
    return row;
  };
  visit(record.reply, 0, 0);
  // The critical path: from the root, the child that finished last, as long as it is
  // what kept its parent waiting (it ends within the parent's last fifth).
  let row = rows[0];
  row.critical = true;
  while (row.children.length) {
    const last = row.children.reduce((a, b) => (b.end > a.end ? b : a));
    if (last.end < row.start + 0.8 * (row.end - row.start)) break;
    last.critical = true;
    row = last;
  }
  return rows;
}

/** The attempts of an asynchronous activation (`job`), and a re-run button when dead. */
function showAttempts(job) {
  const list = $('inspector-attempts');
  list.hidden = !job;
  $('inspector-rerun').hidden = !job || job.state !== 'dead';
  list.replaceChildren();
  if (!job) return;
  for (const a of job.attempts) {
    const li = document.createElement('li');
    li.className = a.outcome === 'ok' ? 'ok' : (a.outcome ? 'failed' : 'running');
    li.dataset.attempt = a.attempt;
    li.textContent = `attempt ${a.attempt}/${job.max_attempts} on ${a.gateway}: `
      + (a.outcome ? `${a.code} ${a.outcome} in ${a.elapsed_ms} ms` : 'running');
    list.append(li);
  }
}

/** An asynchronous activation still queued or running (GET answered 202). */
function showPending(job) {
  $('inspector').hidden = false;
  $('inspector-id').textContent = job.activation_id;
  $('inspector-summary').className = 'result';
  $('inspector-summary').textContent = `${job.request.node}: ${job.state} (asynchronous, queued ${new Date(job.queued_at).toLocaleTimeString()})`;
  $('waterfall').replaceChildren();
  $('inspector-json').textContent = JSON.stringify(job, null, 2);
  showAttempts(job);
  mesh.inspected = null;
}

function showInspector(detail) {
  $('inspector').hidden = false;
  showAttempts(detail.job);
  $('inspector-id').textContent = detail.activation_id;
  $('inspector-summary').className = `result ${detail.outcome === 'ok' ? 'ok' : 'failed'}`;
  $('inspector-summary').textContent = `${detail.node} ${detail.code} ${detail.outcome} in ${detail.elapsed_ms} ms, `
    + `started ${new Date(detail.started_at).toLocaleTimeString()} via ${detail.gateway}`;
  const trace = $('inspector-trace');
  trace.hidden = !detail.trace_url;
  if (detail.trace_url) trace.href = detail.trace_url;
  const rows = waterfallRows(detail);
  const total = Math.max(1, ...rows.map((r) => r.end));
  const chart = $('waterfall');
  chart.replaceChildren();
  for (const row of rows) {
    const label = document.createElement('span');
    label.className = `label${row.critical ? ' critical' : ''}`;
    label.textContent = `${'\u00a0\u00a0'.repeat(row.depth)}${row.reply.node}`;
    const track = document.createElement('span');
    track.className = `track${row.critical ? ' critical' : ''}`;
    track.setAttribute('role', 'listitem');
    track.dataset.node = row.reply.node;
    const bar = document.createElement('i');
    bar.className = `bar ${row.reply.outcome}`;
    bar.style.left = `${(100 * row.start) / total}%`;
    bar.style.width = `${(100 * (row.end - row.start)) / total}%`;
    bar.title = `${row.reply.node}: ${row.reply.code} ${row.reply.outcome}, starts at ${row.start.toFixed(1)} ms, `
      + `takes ${row.reply.elapsed_ms} ms${row.critical ? ' (critical path)' : ''}: ${row.reply.message}`;
    track.append(bar);
    const ms = document.createElement('span');
    ms.className = 'ms';
    ms.textContent = `${row.reply.elapsed_ms} ms`;
    chart.append(label, track, ms);
  }
  $('inspector-json').textContent = JSON.stringify(detail.reply, null, 2);
  mesh.inspected = detail;
  $('inspector').scrollIntoView({ block: 'nearest' });
}

/** Opens the inspector on `id`, waiting a little for it to be kept (just after its answer). */
async function inspectActivation(id, tries = 10) {
  $('inspector').hidden = false;
  $('inspector-id').textContent = id;
  $('inspector-summary').className = 'result';
  $('inspector-summary').textContent = 'loading…';
  for (let i = 0; i < tries; i += 1) {
    try {
      const r = await fetch(`/activations/${encodeURIComponent(id)}`, { cache: 'no-store' });
      if (r.status === 202) {
        // Asynchronous, not ended yet: shown as it is, asked again shortly.
        showPending(await r.json());
        await new Promise((done) => { setTimeout(done, 1000); });
        i -= 1;
        if ($('inspector').hidden || $('inspector-id').textContent !== id) return;
        continue;
      }
      if (r.ok) { showInspector(await r.json()); return; }
      if (r.status !== 404) {
        const e = await r.json().catch(() => ({}));
        $('inspector-summary').textContent = `${r.status} ${e.message || ''}`;
        return;
      }
    } catch (err) {
      $('inspector-summary').textContent = `request failed: ${err}`;
      return;
    }
    await new Promise((done) => { setTimeout(done, 300); });
  }
  $('inspector-summary').className = 'result failed';
  $('inspector-summary').textContent = 'not kept: only activations started through a gateway (POST /activate) are kept, for a limited time';
}

$('inspector-close').addEventListener('click', () => { $('inspector').hidden = true; });
$('inspector-rerun').addEventListener('click', async () => {
  const id = $('inspector-id').textContent;
  const job = await send('POST', `/activations/${encodeURIComponent(id)}/retry`, undefined, $('inspector-summary'));
  if (job && job.activation_id) inspectActivation(job.activation_id);
});
$('inspector-repeat').addEventListener('click', async () => {
  const asked = mesh.inspected && mesh.inspected.request;
  if (!asked) return;
  const reply = await send('POST', '/activate', asked, $('inspector-summary'));
  if (reply && reply.activation_id) inspectActivation(reply.activation_id);
});

async function loadRecent(dead = false) {
  try {
    const r = await fetch(dead ? '/activations?limit=20&state=dead' : '/activations?limit=20', { cache: 'no-store' });
    if (!r.ok) return;
    const list = $('recent');
    list.replaceChildren();
    for (const a of (await r.json()).activations) {
      const li = document.createElement('li');
      li.className = a.outcome === 'ok' ? 'ok' : 'failed';
      const open = document.createElement('button');
      open.type = 'button';
      open.dataset.activation = a.activation_id;
      open.textContent = `${new Date(a.started_at).toLocaleTimeString()} ${a.node} ${a.code} ${a.elapsed_ms}ms ${a.activation_id}`;
      open.addEventListener('click', () => inspectActivation(a.activation_id));
      li.append(open);
      list.append(li);
    }
  } catch { /* the stream's reconnect says so */ }
}
$('recent-load').addEventListener('click', () => { mesh.deadShown = false; loadRecent(); });
$('recent-dead').addEventListener('click', () => { mesh.deadShown = true; loadRecent(true); });

/** Deployed WebAssembly functions with their versions (GET /functions). */
async function loadFunctions() {
  try {
    const r = await fetch('/functions', { cache: 'no-store' });
    if (!r.ok) return;
    const { functions } = await r.json();
    const list = $('functions');
    list.replaceChildren();
    for (const f of functions) {
      const li = document.createElement('li');
      li.dataset.function = f.name;
      li.dataset.version = f.current.version;
      const c = f.current;
      li.textContent = `${f.name} v${c.version} · ${c.size ?? '?'} B${c.settings.description ? ' · ' + c.settings.description : ''}`;
      li.title = `${c.digest ?? ''} deployed ${c.deployed_at ?? '?'}; downstream: ${c.settings.downstream.join(', ') || 'none'}`;
      list.append(li);
    }
    if (functions.length === 0) {
      const li = document.createElement('li');
      li.className = 'hint';
      li.textContent = 'none deployed (PUT /functions/{name})';
      list.append(li);
    }
  } catch { /* the stream's reconnect says so */ }
}
$('functions-load').addEventListener('click', loadFunctions);

/** The triggers the gateway runs (GET /triggers). */
async function loadTriggers() {
  try {
    const r = await fetch('/triggers', { cache: 'no-store' });
    if (!r.ok) return;
    const { triggers } = await r.json();
    const list = $('triggers');
    list.replaceChildren();
    for (const t of triggers) {
      const li = document.createElement('li');
      li.dataset.trigger = t.name;
      li.textContent = `${t.name} → ${t.node} on ${t.subject ? `subject ${t.subject}` : `cron ${t.cron}`}`;
      list.append(li);
    }
    if (triggers.length === 0) {
      const li = document.createElement('li');
      li.className = 'hint';
      li.textContent = 'none (PUT /triggers/{name})';
      list.append(li);
    }
  } catch { /* the stream's reconnect says so */ }
}

/** Starts the live page, unless reads are private and no session is open yet. */
async function start() {
  const probe = await fetch('/topology', { cache: 'no-store' }).catch(() => null);
  if (probe && probe.status === 401) {
    $('token-why').textContent = 'this gateway keeps its reads private: its read token (or API token) opens them';
    $('token-form').hidden = false;
    return;
  }
  if (mesh.started) return;
  mesh.started = true;
  connect();
  loadRecent();
  loadFunctions();
  loadTriggers();
}

start();
pollBus();
setInterval(pollBus, 5000);
setInterval(loadTriggers, 5000);
setInterval(loadFunctions, 5000);
setInterval(refreshTopology, 5000);
setInterval(() => loadRecent(mesh.deadShown), 5000);
