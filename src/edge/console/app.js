// astra-bus console: plain JavaScript, no dependencies, no build step.
//
// Everything shown comes from /console/api. Live health is polled when the daemon's next
// snapshot is due and is served from the daemon's memory, so an open console costs Redis
// nothing; dead letters and traces are read from Redis only when the operator asks.
// Every string that comes from the bus is inserted as text, never as markup.
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
const KEY_STORE = 'astra-bus-console-key';

const state = {
  key: sessionStorage.getItem(KEY_STORE) || '',
  topo: null,
  graph: null,
  health: null,
  at: null, // generated_at_ms of the snapshot shown
  offset: 0, // server clock - local clock, ms
  online: false,
  hist: { t: [], groups: {}, streams: {} },
  selected: null,
  dl: { group: '', rows: null, limit: 0 },
  tab: 'overview',
  trace: null,
};

// ---------------------------------------------------------------------------------------
// DOM helpers
// ---------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function build(ns, tag, attrs, children) {
  const n = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') n.textContent = String(v);
    else if (k === 'class') n.setAttribute('class', v);
    else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}
const h = (tag, attrs, ...children) => build(null, tag, attrs, children);
const s = (tag, attrs, ...children) => build(SVG_NS, tag, attrs, children);

const nf = new Intl.NumberFormat('en-US');
function fmtInt(v) { return v === null || v === undefined ? '–' : nf.format(v); }
function fmtRate(v) {
  if (v === null || v === undefined) return '–';
  return (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + '/s';
}
function fmtAge(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return (ms / 1000).toFixed(1) + 's';
  const sec = Math.floor(ms / 1000);
  if (sec < 60) return sec + 's';
  if (sec < 3600) return Math.floor(sec / 60) + 'm ' + String(sec % 60).padStart(2, '0') + 's';
  return Math.floor(sec / 3600) + 'h ' + Math.floor((sec % 3600) / 60) + 'm';
}
function fmtTime(ms) {
  if (!ms) return '–';
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', ' UTC');
}
function shortStream(name) {
  return name.replace(/^astra\./, '');
}
function splitName(name) {
  const i = name.indexOf('.');
  return i < 0 ? ['', name] : [name.slice(0, i), name.slice(i + 1)];
}

function toast(text, error) {
  const t = h('div', { class: 'toast' + (error ? ' error' : ''), role: 'status', text });
  $('toasts').append(t);
  setTimeout(() => t.remove(), error ? 9000 : 6000);
}

// ---------------------------------------------------------------------------------------
// Modal dialog (confirmations, the API key)
// ---------------------------------------------------------------------------------------

let modalBusy = null;

// Opens the dialog; resolves to the input's value (or true without input) on OK, null on
// cancel. `confirmText`: OK stays disabled until the input equals it.
function modal({ title, body, ok, danger, input, confirmText }) {
  const run = () => new Promise((resolve) => {
    const d = $('modal');
    $('modal-title').textContent = title;
    const b = $('modal-body');
    b.replaceChildren(...body);
    let field = null;
    if (input) {
      field = h('input', { type: input.type || 'text', placeholder: input.placeholder || '', id: 'modal-input', autocomplete: 'off', spellcheck: 'false' });
      b.append(field);
    }
    const okBtn = $('modal-ok');
    okBtn.textContent = ok || 'OK';
    okBtn.className = 'primary' + (danger ? ' danger' : '');
    const sync = () => { okBtn.disabled = confirmText !== undefined && (!field || field.value !== confirmText); };
    sync();
    if (field) field.addEventListener('input', sync);
    const done = (v) => {
      okBtn.onclick = null; $('modal-cancel').onclick = null; d.oncancel = null;
      if (field) field.onkeydown = null;
      d.close();
      resolve(v);
    };
    okBtn.onclick = () => done(field ? field.value : true);
    $('modal-cancel').onclick = () => done(null);
    d.oncancel = (e) => { e.preventDefault(); done(null); };
    if (field) field.onkeydown = (e) => { if (e.key === 'Enter' && !okBtn.disabled) { e.preventDefault(); okBtn.click(); } };
    d.showModal();
    (field || okBtn).focus();
  });
  // One dialog at a time.
  const p = (modalBusy || Promise.resolve()).then(run, run);
  modalBusy = p.catch(() => null);
  return p;
}

let keyPrompt = null;
function askKey(why) {
  if (!keyPrompt) {
    keyPrompt = modal({
      title: 'API key needed',
      body: [
        h('p', { text: 'This daemon serves its operations routes only to API keys with the ops scope (edge.ops = "keys").' }),
        why ? h('p', { class: 'why', text: 'The edge answered: ' + why }) : null,
        h('p', { text: 'The key stays in this tab (sessionStorage) and is sent as a bearer token.' }),
      ].filter(Boolean),
      ok: 'Use key',
      input: { type: 'password', placeholder: 'API key with the ops scope' },
    }).then((v) => {
      keyPrompt = null;
      if (v) { state.key = v.trim(); sessionStorage.setItem(KEY_STORE, state.key); }
      return Boolean(v);
    });
  }
  return keyPrompt;
}

// ---------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || ('HTTP ' + status));
    this.status = status;
    this.body = body;
  }
}

async function api(path, opts = {}) {
  const headers = { Accept: 'application/json' };
  if (state.key) headers.Authorization = 'Bearer ' + state.key;
  let body;
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  const r = await fetch(path, { method: opts.method || 'GET', headers, body, cache: 'no-store', credentials: 'omit' });
  let data = null;
  try { data = await r.json(); } catch (_) { data = null; }
  if ((r.status === 401 || r.status === 403) && !opts.retried) {
    const why = data && data.detail ? data.detail : undefined;
    if (await askKey(why)) return api(path, Object.assign({}, opts, { retried: true }));
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

// ---------------------------------------------------------------------------------------
// Topology graph: layered top to bottom (stream → group → stream), from the running config
// ---------------------------------------------------------------------------------------

const NODE_H = 36;
const ROW_GAP = 54;
const COL_GAP = 18;

function textWidth(str, px) { return str.length * px * 0.6; }

function layoutGraph(topo) {
  const nodes = new Map();
  for (const st of topo.streams) {
    nodes.set('s:' + st.name, {
      id: 's:' + st.name, kind: 'stream', name: st.name, info: st,
      top: st.domain, label: st.event + ' v' + st.version, up: [], down: [],
    });
  }
  for (const g of topo.groups) {
    const [dom, rest] = splitName(g.name);
    nodes.set('g:' + g.name, { id: 'g:' + g.name, kind: 'group', name: g.name, info: g, top: dom, label: rest, up: [], down: [] });
  }
  const edges = [];
  for (const e of topo.edges) {
    const from = nodes.get((e.kind === 'reads' ? 's:' : 'g:') + e.from);
    const to = nodes.get((e.kind === 'reads' ? 'g:' : 's:') + e.to);
    if (!from || !to) continue;
    const edge = { from, to, kind: e.kind, group: e.kind === 'reads' ? e.to : e.from, stream: e.kind === 'reads' ? e.from : e.to };
    edges.push(edge);
    from.down.push(edge);
    to.up.push(edge);
  }
  // Dead-letter edges (group → its dead-letter stream), shown while the group has some.
  for (const g of topo.groups) {
    const from = nodes.get('g:' + g.name);
    const to = nodes.get('s:' + g.dead_letter_stream);
    if (from && to) edges.push({ from, to, kind: 'dead-letters', group: g.name, stream: g.dead_letter_stream });
  }
  // Ranks: a stream nobody publishes is 0; a group sits below every stream it reads; a
  // stream below every group that publishes it. Bounded passes, so a cyclic config still
  // gets a picture.
  for (const n of nodes.values()) n.rank = n.kind === 'stream' ? 0 : 1;
  for (let pass = 0; pass < 2 * nodes.size; pass++) {
    let moved = false;
    for (const n of nodes.values()) {
      const ups = n.up.filter((e) => e.kind !== 'dead-letters');
      if (!ups.length) continue;
      const r = Math.max(...ups.map((e) => e.from.rank)) + 1;
      if (r > n.rank && r < 4 * nodes.size) { n.rank = r; moved = true; }
    }
    if (!moved) break;
  }
  let maxRank = 0;
  for (const n of nodes.values()) if (n.up.length || n.down.length) maxRank = Math.max(maxRank, n.rank);
  // Dead-letter streams (and anything unconnected) go to the bottom row, after its nodes.
  const bottom = [];
  for (const n of nodes.values()) {
    if (n.kind === 'stream' && (n.info.dead_letter || (!n.up.length && !n.down.length))) {
      n.rank = maxRank;
      bottom.push(n);
    }
  }
  // Groups that read most streams (the analytics sinks) draw their many inputs faintly.
  const sinkAt = Math.max(6, Math.ceil(topo.streams.length / 2));
  for (const n of nodes.values()) n.sink = n.kind === 'group' && n.up.length >= sinkAt;

  const rows = [];
  for (const n of nodes.values()) (rows[n.rank] = rows[n.rank] || []).push(n);
  for (let r = 0; r < rows.length; r++) rows[r] = rows[r] || [];
  for (const row of rows) row.sort((a, b) => (a.top + a.label).localeCompare(b.top + b.label));
  const pos = (n) => { const row = rows[n.rank]; return row.length > 1 ? row.indexOf(n) / (row.length - 1) : 0.5; };
  const reorder = (row, neighbours) => {
    const keyed = row.map((n, i) => {
      const ns = neighbours(n).filter((m) => !m.sink || n.sink);
      const bary = ns.length ? ns.reduce((a, m) => a + pos(m), 0) / ns.length : (row.length > 1 ? i / (row.length - 1) : 0.5);
      return { n, bary, i };
    });
    keyed.sort((a, b) => a.bary - b.bary || a.i - b.i);
    row.splice(0, row.length, ...keyed.map((k) => k.n));
  };
  const upOf = (n) => n.up.filter((e) => e.kind !== 'dead-letters').map((e) => e.from);
  const downOf = (n) => n.down.filter((e) => e.kind !== 'dead-letters').map((e) => e.to);
  for (let sweep = 0; sweep < 6; sweep++) {
    for (let r = 1; r < rows.length; r++) reorder(rows[r], upOf);
    for (let r = rows.length - 2; r >= 0; r--) reorder(rows[r], downOf);
  }
  const lastRow = rows[maxRank];
  for (const n of bottom) { lastRow.splice(lastRow.indexOf(n), 1); lastRow.push(n); }
  // Coordinates.
  let width = 0;
  for (const row of rows) {
    let x = 0;
    for (const n of row) {
      n.w = Math.max(98, Math.max(textWidth(n.top, 10), textWidth(n.label, 11.5)) + 26);
      n.h = NODE_H;
      x += n.w + COL_GAP;
    }
    row.total = Math.max(0, x - COL_GAP);
    width = Math.max(width, row.total);
  }
  width += 40;
  rows.forEach((row, r) => {
    let x = (width - row.total) / 2;
    for (const n of row) {
      n.x = x;
      n.y = 20 + r * (NODE_H + ROW_GAP);
      x += n.w + COL_GAP;
    }
  });
  const height = 20 + rows.length * (NODE_H + ROW_GAP) - ROW_GAP + 20;
  // Attachment points spread along each node's edge, in the order of the other ends.
  for (const n of nodes.values()) {
    const spread = (list, end) => {
      list.sort((a, b) => (a[end].x + a[end].w / 2) - (b[end].x + b[end].w / 2));
      const usable = n.w * 0.72;
      list.forEach((e, i) => {
        const off = list.length > 1 ? (i / (list.length - 1) - 0.5) * usable : 0;
        e[end === 'to' ? 'x1' : 'x2'] = n.x + n.w / 2 + off;
      });
    };
    spread(n.down.slice(), 'to');
    spread(n.up.slice(), 'from');
  }
  for (const e of edges) {
    if (e.kind === 'dead-letters') {
      e.x1 = e.from.x + e.from.w / 2;
      e.x2 = e.to.x + e.to.w / 2;
    }
    const y1 = e.from.y + NODE_H;
    const y2 = e.to.y;
    if (y2 > y1) {
      const dy = Math.max(28, (y2 - y1) * 0.45);
      e.d = `M${e.x1.toFixed(1)},${y1} C${e.x1.toFixed(1)},${(y1 + dy).toFixed(1)} ${e.x2.toFixed(1)},${(y2 - dy).toFixed(1)} ${e.x2.toFixed(1)},${y2}`;
    } else {
      // Upward (a cycle in the config): leave from the side and loop around.
      const ya = e.from.y + NODE_H / 2;
      const yb = e.to.y + NODE_H / 2;
      const xa = e.from.x + e.from.w;
      const xb = e.to.x + e.to.w;
      const bulge = Math.max(xa, xb) + 60;
      e.d = `M${xa},${ya} C${bulge},${ya} ${bulge},${yb} ${xb},${yb}`;
    }
  }
  return { nodes, edges, rows, width, height };
}

function drawGraph() {
  const g = state.graph;
  const svg = s('svg', { viewBox: `0 0 ${g.width} ${g.height}`, width: g.width, height: g.height, role: 'img', 'aria-label': 'Topology: streams and consumer groups', id: 'topology' });
  svg.style.maxWidth = '100%';
  svg.style.height = 'auto';
  const edgeLayer = s('g', { class: 'edges' });
  const hitLayer = s('g', { class: 'hits' });
  const nodeLayer = s('g', { class: 'nodes' });
  g.edges.forEach((e, i) => {
    const cls = 'edge ' + e.kind + (e.kind === 'reads' && e.to.sink ? ' sink' : '');
    e.el = s('path', { class: cls, d: e.d, 'data-from': e.kind === 'reads' ? e.stream : e.group, 'data-to': e.kind === 'reads' ? e.group : e.stream, 'data-kind': e.kind, 'data-group': e.group, 'data-edge': i });
    e.title = s('title', { text: `${shortStream(e.stream)} → ${e.group}` });
    if (e.kind === 'publishes') e.title.textContent = `${e.group} → ${shortStream(e.stream)}`;
    if (e.kind === 'dead-letters') { e.el.setAttribute('visibility', 'hidden'); e.title.textContent = `${e.group} dead letters → ${shortStream(e.stream)}`; }
    e.hit = s('path', { class: 'edge-hit', d: e.d, 'data-hit': i, onclick: (ev) => { ev.stopPropagation(); openGroup(e.group); } }, e.title);
    if (e.kind === 'dead-letters') e.hit.setAttribute('visibility', 'hidden');
    edgeLayer.append(e.el);
    hitLayer.append(e.hit);
  });
  for (const n of g.nodes.values()) {
    const cls = 'node ' + n.kind + (n.kind === 'stream' && n.info.external ? ' external' : '') + (n.kind === 'stream' && n.info.dead_letter ? ' dead-letter' : '');
    n.title = s('title', { text: n.name });
    n.el = s('g', {
      class: cls, transform: `translate(${n.x.toFixed(1)},${n.y})`, 'data-kind': n.kind, 'data-name': n.name,
      onclick: (ev) => { ev.stopPropagation(); if (n.kind === 'group') openGroup(n.name); else focusStream(n.name); },
    },
    n.title,
    s('rect', { width: n.w.toFixed(1), height: NODE_H, rx: n.kind === 'stream' ? NODE_H / 2 : 7 }),
    s('text', { class: 'domain', x: n.w / 2, y: 14, 'text-anchor': 'middle', text: n.top }),
    s('text', { x: n.w / 2, y: 28, 'text-anchor': 'middle', text: n.label }));
    if (n.kind === 'group') {
      n.badge = s('g', { visibility: 'hidden', transform: `translate(${(n.w - 4).toFixed(1)},-4)` },
        s('circle', { class: 'dl-badge', r: 9 }),
        s('text', { class: 'dl-text', 'text-anchor': 'middle', y: 3.5, text: '' }));
      n.el.append(n.badge);
    }
    nodeLayer.append(n.el);
  }
  svg.append(edgeLayer, hitLayer, nodeLayer);
  svg.addEventListener('click', () => { if (state.selected) location.hash = '#/overview'; else clearFocus(); });
  $('graph').replaceChildren(svg);
  $('graph').dataset.ready = '1';
  const reads = g.edges.filter((e) => e.kind === 'reads').length;
  const pubs = g.edges.filter((e) => e.kind === 'publishes').length;
  $('graph-summary').textContent = `${state.topo.streams.length} streams · ${state.topo.groups.length} groups · ${reads} reads · ${pubs} publishes · flows downward`;
  paintGraph();
  applyFocus();
}

function legend() {
  const t = state.topo.thresholds;
  const item = (cls, text, title) => h('span', { title }, h('i', { class: cls }), text);
  $('legend').replaceChildren(
    item('ok', 'ok'),
    item('warn', 'warn', `lag ≥ ${fmtInt(t.lag_warn)}, oldest pending ≥ claim_idle, or dead letters`),
    item('crit', 'crit', `group missing, no consumer while work waits, lag ≥ ${fmtInt(t.lag_crit)}, or oldest pending ≥ ${t.pending_age_crit_factor} × claim_idle`),
    item('publishes', 'publishes'),
    item('dead', 'dead letters'),
  );
}

function pairKey(group, stream) { return group + '\u0000' + stream; }

function paintGraph() {
  const g = state.graph;
  if (!g || !state.health) return;
  const pairs = new Map(state.health.pairs.map((p) => [pairKey(p.group, p.stream), p]));
  const groups = new Map(state.health.groups.map((x) => [x.name, x]));
  const streams = new Map(state.health.streams.map((x) => [x.name, x]));
  for (const e of g.edges) {
    if (e.kind === 'reads') {
      const p = pairs.get(pairKey(e.group, e.stream));
      const hl = p ? p.health : 'unknown';
      e.el.setAttribute('data-health', hl);
      e.el.classList.remove('ok', 'warn', 'crit', 'unknown');
      e.el.classList.add(hl);
      const lines = [`${shortStream(e.stream)} → ${e.group}: ${hl}`];
      if (p) lines.push(`lag ${fmtInt(p.lag)} · pending ${fmtInt(p.pending)} · oldest pending ${fmtAge(p.oldest_pending_age_ms)} · consumers ${p.consumers} · dead letters ${p.dead_letters}`, ...p.reasons);
      e.title.textContent = lines.join('\n');
    } else if (e.kind === 'dead-letters') {
      const gr = groups.get(e.group);
      const vis = gr && gr.dead_letters > 0 ? 'visible' : 'hidden';
      e.el.setAttribute('visibility', vis);
      e.hit.setAttribute('visibility', vis);
      if (gr) e.title.textContent = `${e.group}: ${gr.dead_letters} dead letter(s) in ${shortStream(e.stream)}`;
    }
  }
  // Faint edges of sinks stay faint unless they are unhealthy (then the class wins).
  for (const n of g.nodes.values()) {
    if (n.kind === 'group') {
      const gr = groups.get(n.name);
      const hl = gr ? gr.health : 'unknown';
      n.el.classList.remove('ok', 'warn', 'crit', 'unknown');
      n.el.classList.add(hl);
      n.el.setAttribute('data-health', hl);
      const dl = gr ? gr.dead_letters : 0;
      n.badge.setAttribute('visibility', dl > 0 ? 'visible' : 'hidden');
      n.badge.lastChild.textContent = dl > 99 ? '99+' : String(dl);
      n.title.textContent = [n.name + ': ' + hl, gr ? `lag ${fmtInt(gr.lag)} · pending ${fmtInt(gr.pending)} · consumers ${gr.consumers} · dead letters ${dl}` : '', ...(gr ? gr.reasons : [])].filter(Boolean).join('\n');
    } else {
      const st = streams.get(n.name);
      n.title.textContent = `${n.name}\nlength ${fmtInt(st && st.length)} · readers ${st ? st.readers : 0}` + (n.info.external ? ' · external input' : '');
    }
  }
}

function setFocus(test) {
  const svg = $('topology');
  if (!svg) return;
  svg.classList.add('focus');
  const lit = new Set();
  for (const e of state.graph.edges) {
    const on = test(e);
    e.el.classList.toggle('lit', on);
    if (on) { lit.add(e.from.id); lit.add(e.to.id); }
  }
  for (const n of state.graph.nodes.values()) n.el.classList.toggle('lit', lit.has(n.id));
}
function clearFocus() {
  const svg = $('topology');
  if (!svg) return;
  svg.classList.remove('focus');
  for (const n of state.graph.nodes.values()) n.el.classList.remove('lit', 'selected');
  for (const e of state.graph.edges) e.el.classList.remove('lit');
}
function focusStream(name) {
  setFocus((e) => e.stream === name && e.kind !== 'dead-letters');
}
function applyFocus() {
  if (!state.graph) return;
  clearFocus();
  if (!state.selected) return;
  setFocus((e) => e.group === state.selected && (e.kind !== 'dead-letters' || e.el.getAttribute('visibility') === 'visible'));
  const n = state.graph.nodes.get('g:' + state.selected);
  if (n) n.el.classList.add('selected', 'lit');
}

function openGroup(name) {
  location.hash = '#/overview/group/' + encodeURIComponent(name);
}

// ---------------------------------------------------------------------------------------
// Small charts
// ---------------------------------------------------------------------------------------

// `floor`: the smallest full scale, so a lag of 3 does not fill the chart like 3,000 would.
function sparkPath(values, w, hgt, pad, floor) {
  const vs = values.map((v) => (v === null || v === undefined ? null : v));
  const known = vs.filter((v) => v !== null);
  const max = Math.max(floor, ...known);
  const n = vs.length;
  let line = '';
  let area = '';
  let started = false;
  let firstX = null;
  let lastX = null;
  vs.forEach((v, i) => {
    if (v === null) return;
    const x = n > 1 ? pad + (i / (n - 1)) * (w - 2 * pad) : w / 2;
    const y = hgt - pad - (v / max) * (hgt - 2 * pad);
    line += (started ? ' L' : 'M') + x.toFixed(1) + ',' + y.toFixed(1);
    area += (started ? ' L' : '') + x.toFixed(1) + ',' + y.toFixed(1);
    if (firstX === null) firstX = x;
    lastX = x;
    started = true;
  });
  if (!started) return { line: '', area: '', max: 0 };
  area = `M${firstX.toFixed(1)},${hgt - pad} L${area} L${lastX.toFixed(1)},${hgt - pad} Z`;
  return { line, area, max: known.length ? Math.max(...known) : 0 };
}

function spark(values, kind, w = 120, hgt = 26, cls = 'spark') {
  const p = sparkPath(values || [], w, hgt, 2, kind === 'lag' ? 100 : 1);
  return s('svg', { class: cls + ' ' + kind, viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: 'none' },
    s('path', { class: 'spark-area', d: p.area }),
    s('path', { class: 'spark-line', d: p.line, 'vector-effect': 'non-scaling-stroke' }));
}

function last(arr) {
  if (!arr) return null;
  for (let i = arr.length - 1; i >= 0; i--) if (arr[i] !== null && arr[i] !== undefined) return arr[i];
  return null;
}

// ---------------------------------------------------------------------------------------
// KPI gauges
// ---------------------------------------------------------------------------------------

const KPI = {
  trades_per_second: { name: 'Trades per second', fmt: (v) => v.toFixed(2) + '/s' },
  daily_active_users: { name: 'Daily active users', fmt: (v) => nf.format(Math.round(v)) },
  daily_revenue_usd: { name: 'Daily revenue', fmt: (v) => '$' + v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 }) },
  engagement_score: { name: 'Engagement score', fmt: (v) => v.toFixed(1) + ' / 10' },
  revenue_per_user_usd: { name: 'Revenue per user', fmt: (v) => '$' + v.toFixed(2) },
  social_interaction_rate: { name: 'Interactions per user', fmt: (v) => v.toFixed(2) + ' /day' },
};
const ARC = 'M 20 90 A 70 70 0 0 1 160 90';
const ARC_LEN = Math.PI * 70;

function renderGauges() {
  const kpis = (state.health && state.health.kpis) || [];
  const box = $('gauges');
  if (box.children.length !== kpis.length) {
    box.replaceChildren(...kpis.map((k) => {
      const meta = KPI[k.kpi] || { name: k.kpi, fmt: (v) => String(v) };
      const fill = s('path', { class: 'gauge-fill', d: ARC, 'stroke-dasharray': `0 ${ARC_LEN}` });
      const tick = s('line', { class: 'gauge-tick' });
      const card = h('div', { class: 'gauge', 'data-kpi': k.kpi },
        h('div', { class: 'name', text: meta.name }),
        s('svg', { viewBox: '0 0 180 100', 'aria-hidden': 'true' }, s('path', { class: 'gauge-track', d: ARC }), fill, tick),
        h('div', { class: 'value' }),
        h('div', { class: 'target' }));
      card.fill = fill;
      card.tick = tick;
      card.meta = meta;
      return card;
    }));
  }
  kpis.forEach((k, i) => {
    const card = box.children[i];
    const scale = Math.max(k.target * 1.5, k.value * 1.05, 1e-9);
    const frac = Math.min(1, Math.max(0, k.value / scale));
    const level = k.met ? 'ok' : k.value >= k.target * 0.5 ? 'warn' : 'crit';
    card.fill.setAttribute('class', 'gauge-fill ' + level);
    card.fill.setAttribute('stroke-dasharray', `${(frac * ARC_LEN).toFixed(1)} ${ARC_LEN.toFixed(1)}`);
    card.fill.setAttribute('visibility', frac > 0.002 ? 'visible' : 'hidden');
    // The target as a tick across the track.
    const ta = Math.PI * (1 - Math.min(1, k.target / scale));
    const cx = 90 + 61 * Math.cos(ta);
    const cy = 90 - 61 * Math.sin(ta);
    const ox = 90 + 79 * Math.cos(ta);
    const oy = 90 - 79 * Math.sin(ta);
    card.tick.setAttribute('x1', cx.toFixed(1)); card.tick.setAttribute('y1', cy.toFixed(1));
    card.tick.setAttribute('x2', ox.toFixed(1)); card.tick.setAttribute('y2', oy.toFixed(1));
    card.dataset.level = level;
    card.querySelector('.value').textContent = card.meta.fmt(k.value);
    card.querySelector('.target').textContent = (k.met ? 'target met · ' : 'below target · ') + card.meta.fmt(k.target);
  });
}

// ---------------------------------------------------------------------------------------
// Live health
// ---------------------------------------------------------------------------------------

function mergeHistory(hh) {
  if (!hh || !hh.t.length) return;
  const H = state.hist;
  const before = H.t.length;
  const add = (into, from) => {
    for (const [name, cols] of Object.entries(from)) {
      const cur = into[name] || (into[name] = { rate: new Array(before).fill(null), lag: new Array(before).fill(null) });
      cur.rate.push(...cols.rate);
      cur.lag.push(...cols.lag);
    }
  };
  H.t.push(...hh.t);
  add(H.groups, hh.groups);
  add(H.streams, hh.streams);
  for (const series of [H.groups, H.streams]) {
    for (const cols of Object.values(series)) {
      while (cols.rate.length < H.t.length) { cols.rate.push(null); cols.lag.push(null); }
    }
  }
  // Keep the server's span.
  const span = (state.topo && state.topo.thresholds.history_span_ms) || 600000;
  const cutoff = H.t[H.t.length - 1] - span;
  let drop = 0;
  while (drop < H.t.length && H.t[drop] < cutoff) drop++;
  if (drop > 0) {
    H.t.splice(0, drop);
    for (const series of [H.groups, H.streams]) for (const cols of Object.values(series)) { cols.rate.splice(0, drop); cols.lag.splice(0, drop); }
  }
}

async function poll() {
  let delay = 2000;
  try {
    const r = await api('/console/api/health' + (state.at !== null ? '?since=' + state.at : ''));
    state.offset = r.now_ms - Date.now();
    state.online = true;
    if (r.changed) {
      state.health = r;
      state.at = r.generated_at_ms;
      mergeHistory(r.history);
      render();
    }
    // Ask again just after the daemon's next snapshot is due.
    const due = r.generated_at_ms + r.refresh_ms + 150 - r.now_ms;
    delay = due > 0 ? Math.min(due, r.refresh_ms * 2) : Math.min(r.refresh_ms, 1000);
    delay = Math.max(250, delay);
  } catch (e) {
    state.online = false;
    if (e instanceof ApiError && e.status === 503) delay = 1000;
  }
  tick();
  setTimeout(poll, delay);
}

function tick() {
  const pill = $('live');
  if (!state.online && state.at === null) { pill.className = 'pill unknown'; pill.textContent = 'connecting…'; return; }
  if (!state.online) { pill.className = 'pill crit'; pill.textContent = 'offline'; return; }
  if (state.at === null) { pill.className = 'pill unknown'; pill.textContent = 'waiting for a snapshot'; return; }
  const age = Date.now() + state.offset - state.at;
  const refresh = state.health ? state.health.refresh_ms : 5000;
  const fresh = age < refresh * 2 + 1500;
  pill.className = 'pill ' + (fresh ? 'ok' : 'warn');
  pill.textContent = (fresh ? 'live' : 'stale') + ' · snapshot ' + fmtAge(Math.max(0, age)) + ' ago · every ' + fmtAge(refresh);
  pill.title = 'Health snapshot of ' + fmtTime(state.at) + ' (the daemon reads Redis every ' + fmtAge(refresh) + '; viewers never do)';
}

function totalDeadLetters() {
  if (!state.health) return 0;
  return state.health.groups.reduce((a, g) => a + (g.dead_letters || 0), 0);
}

function render() {
  document.body.dataset.snapshotAt = String(state.at);
  paintGraph();
  applyFocus();
  renderGauges();
  renderDetail();
  renderTables();
  const dl = totalDeadLetters();
  $('dl-count').textContent = dl > 0 ? fmtInt(dl) : '';
  renderDeadLetterBanner();
}

function healthBadge(hl) {
  return h('span', { class: 'badge ' + hl, text: hl });
}

function renderDetail() {
  const box = $('detail');
  const name = state.selected;
  if (!name || !state.topo) { box.hidden = true; box.removeAttribute('data-group'); return; }
  const cfg = state.topo.groups.find((g) => g.name === name);
  if (!cfg) { box.hidden = true; return; }
  const gr = state.health ? state.health.groups.find((g) => g.name === name) : null;
  const pairs = state.health ? state.health.pairs.filter((p) => p.group === name) : [];
  const hist = state.hist.groups[name] || { rate: [], lag: [] };
  const hl = gr ? gr.health : 'unknown';
  box.hidden = false;
  box.setAttribute('data-group', name);
  box.setAttribute('data-health', hl);
  const rateNow = last(hist.rate);
  const lagNow = last(hist.lag);
  const spanMs = state.hist.t.length > 1 ? state.hist.t[state.hist.t.length - 1] - state.hist.t[0] : 0;
  box.replaceChildren(
    h('div', { class: 'card-head' },
      h('h2', { text: name }), healthBadge(hl),
      h('button', { class: 'ghost close', type: 'button', onclick: () => { location.hash = '#/overview'; }, 'aria-label': 'Close', text: '✕' })),
    h('section', {},
      h('div', { class: 'muted', text: cfg.description || '' }),
      gr && gr.reasons.length ? h('ul', { class: 'reasons' }, gr.reasons.map((r) => h('li', { text: r }))) : null),
    h('section', {},
      h('h4', { text: 'Throughput and lag, last ' + fmtAge(spanMs) }),
      spark(hist.rate, 'rate', 360, 70, 'chart'),
      h('div', { class: 'chart-label' }, h('span', {}, 'read ', h('b', { text: fmtRate(rateNow) })), h('span', { text: 'peak ' + fmtRate(Math.max(0, ...hist.rate.filter((v) => v !== null))) })),
      spark(hist.lag, 'lag', 360, 70, 'chart'),
      h('div', { class: 'chart-label' }, h('span', {}, 'lag ', h('b', { text: fmtInt(lagNow) })), h('span', { text: 'peak ' + fmtInt(Math.max(0, ...hist.lag.filter((v) => v !== null))) }))),
    h('section', {},
      h('h4', { text: 'Per stream' }),
      h('table', { class: 'grid' },
        h('tr', {}, [['stream', ''], ['lag', ''], ['pend.', 'pending'], ['oldest', 'oldest pending'], ['cons.', 'consumers']].map(([t, title]) => h('th', { text: t, title: title || undefined }))),
        pairs.map((p) => h('tr', { class: p.health, 'data-stream': p.stream, 'data-health': p.health },
          h('td', { class: 'name', title: p.stream, text: shortStream(p.stream).replace(/\.v(\d+)$/, ' v$1') }),
          h('td', { class: 'num', text: fmtInt(p.lag) }),
          h('td', { class: 'num', text: fmtInt(p.pending) }),
          h('td', { class: 'num', text: fmtAge(p.oldest_pending_age_ms) }),
          h('td', { class: 'num', text: String(p.consumers) }))))),
    h('section', {},
      h('h4', { text: 'Dead letters' }),
      h('div', {}, h('b', { text: fmtInt(gr ? gr.dead_letters : 0) }), ' in ', h('span', { class: 'mono', text: cfg.dead_letter_stream }), ' · ',
        h('a', { href: '#/dead-letters/' + encodeURIComponent(name), text: 'list, replay, purge' }))),
    h('section', {},
      h('h4', { text: 'Configuration' }),
      h('dl', { class: 'kv' },
        h('dt', { text: 'handler' }), h('dd', { text: cfg.handler }),
        h('dt', { text: 'reads' }), h('dd', { text: cfg.reads.map(shortStream).join(', ') }),
        h('dt', { text: 'publishes' }), h('dd', { text: cfg.publishes.map(shortStream).join(', ') || '—' }),
        h('dt', { text: 'batch / in flight' }), h('dd', { text: cfg.batch_size + ' / ' + cfg.concurrency }),
        h('dt', { text: 'claim_idle' }), h('dd', { text: fmtAge(cfg.claim_idle_ms) }),
        h('dt', { text: 'max_deliveries' }), h('dd', { text: String(cfg.max_deliveries) }))),
  );
}

function renderTables() {
  if (!state.health || !state.topo) return;
  const H = state.hist;
  const spanMs = H.t.length > 1 ? H.t[H.t.length - 1] - H.t[0] : 0;
  $('health-span').textContent = 'charts: last ' + fmtAge(spanMs) + ' · ' + H.t.length + ' snapshots';
  const sparkCell = (vals, kind, fmt) => h('td', {}, h('div', { class: 'spark-cell' }, spark(vals, kind), h('span', { text: fmt(last(vals)) })));
  $('groups-table').replaceChildren(
    h('tr', {}, ['group', 'health', 'lag', 'pending', 'oldest pending', 'consumers', 'dead letters', 'throughput', 'lag'].map((t) => h('th', { text: t }))),
    ...state.health.groups.map((g) => {
      const hs = H.groups[g.name] || { rate: [], lag: [] };
      return h('tr', { class: 'click ' + g.health, 'data-group': g.name, 'data-health': g.health, onclick: () => openGroup(g.name), title: g.reasons.join('\n') },
        h('td', { class: 'name', text: g.name }),
        h('td', {}, healthBadge(g.health)),
        h('td', { class: 'num', text: fmtInt(g.lag) }),
        h('td', { class: 'num', text: fmtInt(g.pending) }),
        h('td', { class: 'num', text: fmtAge(g.oldest_pending_age_ms) }),
        h('td', { class: 'num', text: String(g.consumers) }),
        h('td', { class: 'num', text: fmtInt(g.dead_letters) }),
        sparkCell(hs.rate, 'rate', fmtRate),
        sparkCell(hs.lag, 'lag', fmtInt));
    }));
  $('streams-table').replaceChildren(
    h('tr', {}, ['stream', 'length', 'readers', 'max reader lag', 'added', 'lag'].map((t) => h('th', { text: t }))),
    ...state.health.streams.map((st) => {
      const hs = H.streams[st.name] || { rate: [], lag: [] };
      return h('tr', { 'data-stream': st.name },
        h('td', { class: 'name', text: st.name }),
        h('td', { class: 'num', text: fmtInt(st.length) }),
        h('td', { class: 'num', text: String(st.readers) }),
        h('td', { class: 'num', text: fmtInt(st.max_lag) }),
        sparkCell(hs.rate, 'rate', fmtRate),
        sparkCell(hs.lag, 'lag', fmtInt));
    }));
}

// ---------------------------------------------------------------------------------------
// Dead letters
// ---------------------------------------------------------------------------------------

function snapshotDeadLetters(group) {
  if (!state.health) return null;
  if (!group) return totalDeadLetters();
  const g = state.health.groups.find((x) => x.name === group);
  return g ? g.dead_letters : 0;
}

function renderDeadLetterBanner() {
  const box = $('dl-list');
  const old = box.querySelector('.banner');
  if (old) old.remove();
  if (state.dl.rows === null || state.tab !== 'dead-letters') return;
  const n = snapshotDeadLetters(state.dl.group);
  if (n === null || n === state.dl.rows.length || state.dl.rows.length >= state.dl.limit) return;
  box.prepend(h('div', { class: 'banner' },
    `The latest snapshot counts ${fmtInt(n)} dead letter(s)${state.dl.group ? ' of ' + state.dl.group : ''}; the list shows ${state.dl.rows.length}. `,
    h('a', { href: '#', onclick: (e) => { e.preventDefault(); loadDeadLetters(); }, text: 'Reload' })));
}

async function loadDeadLetters() {
  const group = $('dl-group').value;
  $('dl-purge').disabled = !group;
  $('dl-note').textContent = 'reading…';
  try {
    const r = await api('/console/api/dead-letters?count=200' + (group ? '&group=' + encodeURIComponent(group) : ''));
    state.dl = { group, rows: r.dead_letters, limit: r.limit };
    $('dl-note').textContent = `${r.count}${r.count >= r.limit ? '+' : ''} dead letter(s) · read ${new Date().toLocaleTimeString()}`;
    renderDeadLetters();
  } catch (e) {
    $('dl-note').textContent = '';
    $('dl-list').replaceChildren(h('p', { class: 'pad', text: 'Could not read dead letters: ' + e.message }));
  }
}

function payloadBlock(payload, preview, fields) {
  if (payload !== null && payload !== undefined) return h('pre', { class: 'payload', text: JSON.stringify(payload, null, 2) });
  if (preview) return h('pre', { class: 'payload', text: preview });
  if (fields) return h('pre', { class: 'payload', text: fields.map(([k, v]) => k + ' = ' + v).join('\n') });
  return null;
}

function renderDeadLetters() {
  const rows = state.dl.rows || [];
  const box = $('dl-list');
  if (!rows.length) {
    box.replaceChildren(h('p', { class: 'pad muted', text: 'No dead letters' + (state.dl.group ? ' of ' + state.dl.group : '') + '.' }));
    return;
  }
  box.replaceChildren(...rows.map((d) => {
    const ev = d.event;
    return h('article', { class: 'dl', 'data-dlq-id': d.dlq_id, 'data-group': d.group || '' },
      h('div', { class: 'dl-head' },
        h('span', { class: 'badge crit', text: d.reason || '?' }),
        h('a', { class: 'mono', href: '#/overview/group/' + encodeURIComponent(d.group || ''), text: d.group || '?' }),
        h('span', { class: 'muted', text: 'attempts ' + (d.attempts ?? '?') }),
        h('span', { class: 'grow' }),
        h('span', { class: 'mono muted', text: d.dlq_id }),
        h('button', { type: 'button', class: 'replay', onclick: () => replayOne(d) }, 'Replay…')),
      h('div', { class: 'dl-meta' },
        h('span', {}, 'from ', h('span', { class: 'mono', text: (d.stream || '?') + ' ' + (d.entry_id || '') })),
        h('span', { text: 'dead-lettered ' + fmtTime(d.dead_at_ms) }),
        ev ? h('span', {}, 'event ', h('span', { class: 'mono', text: ev.type + ' ' + ev.id })) : null,
        ev ? h('span', {}, 'cid ', h('a', { class: 'mono', href: '#/trace/' + encodeURIComponent(ev.cid), text: ev.cid })) : null),
      d.error ? h('div', { class: 'dl-error', text: d.error }) : null,
      payloadBlock(d.payload, d.payload_preview, d.fields));
  }));
  renderDeadLetterBanner();
}

async function replayOne(d) {
  const ok = await modal({
    title: 'Replay this dead letter?',
    body: [
      h('p', {}, 'Dead letter ', h('span', { class: 'mono', text: d.dlq_id }), ' of ', h('b', { text: d.group }), ' (', d.reason || '?', ', delivered ', String(d.attempts ?? '?'), '×) is replayed as ', h('code', { text: 'astra-bus dlq replay ' + d.dlq_id }), ' would.'),
      h('p', { text: 'Fix what made it fail first, or it comes back here. The replay is recorded in the daemon\'s log.' }),
    ],
    ok: 'Replay',
  });
  if (!ok) return;
  try {
    const r = await api('/console/api/dead-letters/replay', { method: 'POST', json: { group: d.group, ids: [d.dlq_id], confirm: d.group } });
    const x = r.replayed[0];
    toast(`Replayed ${x.dlq_id} → ${x.stream} ${x.entry_id}`);
  } catch (e) {
    toast('Replay failed: ' + e.message, true);
  }
  loadDeadLetters();
}

async function purgeGroup() {
  const group = $('dl-group').value;
  if (!group) return;
  const n = snapshotDeadLetters(group);
  const ok = await modal({
    title: 'Purge dead letters?',
    body: [
      h('p', {}, 'This deletes every dead letter of ', h('b', { text: group }), ` (${fmtInt(n)} in the latest snapshot). They cannot be replayed afterwards.`),
      h('p', { text: 'Type the group\'s name to confirm:' }),
    ],
    ok: 'Purge',
    danger: true,
    input: { placeholder: group },
    confirmText: group,
  });
  if (ok === null) return;
  try {
    const r = await api('/console/api/dead-letters/purge', { method: 'POST', json: { group, confirm: ok } });
    toast(`Purged ${r.purged} dead letter(s) of ${group}`);
  } catch (e) {
    toast('Purge failed: ' + e.message, true);
  }
  loadDeadLetters();
}

// ---------------------------------------------------------------------------------------
// Trace
// ---------------------------------------------------------------------------------------

function traceNode(n) {
  const by = n.group
    ? h('span', { class: 'by', text: 'by ' + n.group })
    : h('span', { class: 'by root', text: n.caus ? 'src ' + n.src : 'root · src ' + n.src });
  return h('li', { class: 'trace-node', 'data-depth': n.depth, 'data-id': n.id, 'data-type': n.type, 'data-stream': n.stream, 'data-entry': n.entry_id, 'data-group': n.group || '' },
    h('div', { class: 'tnode' },
      h('div', { class: 'tnode-head' },
        h('span', { class: 'etype', text: n.type }), h('span', { class: 'muted', text: 'v' + n.v }), by,
        h('span', { class: 'where mono', text: n.stream + ' ' + n.entry_id }),
        h('span', { class: 'where', text: fmtTime(n.ts) })),
      h('div', { class: 'mono muted', text: n.id }),
      payloadBlock(n.payload, n.payload_preview, null)));
}

async function runTrace(cid) {
  const out = $('trace-result');
  $('trace-note').textContent = 'scanning streams…';
  try {
    const r = await api('/console/api/trace?cid=' + encodeURIComponent(cid));
    const root = h('ul', { class: 'tree', 'data-cid': r.cid });
    const stack = [{ depth: -1, ul: root }];
    for (const n of r.nodes) {
      while (stack.length > 1 && stack[stack.length - 1].depth >= n.depth) stack.pop();
      const li = traceNode(n);
      stack[stack.length - 1].ul.append(li);
      const ul = h('ul', {});
      li.append(ul);
      stack.push({ depth: n.depth, ul });
    }
    for (const ul of root.querySelectorAll('ul')) if (!ul.children.length) ul.remove();
    const groups = new Set(r.nodes.map((n) => n.group).filter(Boolean));
    $('trace-note').textContent = `${r.count} event(s) from ${groups.size} group(s)${r.truncated ? ' (first ' + r.nodes.length + ' shown)' : ''} · scanned ${fmtTime(r.from_ms)} – ${fmtTime(r.to_ms)}`;
    out.replaceChildren(root, h('details', { class: 'cli' }, h('summary', { text: 'As astra-bus trace prints it' }), h('pre', { class: 'cli-text', text: r.text })));
    out.dataset.cid = r.cid;
  } catch (e) {
    $('trace-note').textContent = '';
    out.dataset.cid = '';
    out.replaceChildren(h('p', { class: 'pad', text: e.status === 404 && e.body ? e.body.detail : 'Trace failed: ' + e.message }));
  }
}

// ---------------------------------------------------------------------------------------
// Routing: #/overview[/group/<name>], #/health, #/dead-letters[/<group>], #/trace[/<cid>]
// ---------------------------------------------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  const tab = ['overview', 'health', 'dead-letters', 'trace'].includes(parts[0]) ? parts[0] : 'overview';
  state.tab = tab;
  for (const a of document.querySelectorAll('.tabs a')) a.classList.toggle('active', a.dataset.tab === tab);
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== 'view-' + tab;
  if (tab === 'overview') {
    state.selected = parts[1] === 'group' && parts[2] ? decodeURIComponent(parts[2]) : null;
    renderDetail();
    applyFocus();
  } else if (tab === 'dead-letters') {
    const group = parts[1] ? decodeURIComponent(parts[1]) : '';
    const sel = $('dl-group');
    if ([...sel.options].some((o) => o.value === group)) sel.value = group;
    loadDeadLetters();
  } else if (tab === 'trace') {
    const cid = parts.slice(1).join('/');
    if (cid) {
      const c = decodeURIComponent(cid);
      $('trace-cid').value = c;
      if (!state.trace || state.trace !== c) { state.trace = c; runTrace(c); }
    }
  }
}

async function start() {
  $('key-button').addEventListener('click', () => askKey());
  $('dl-reload').addEventListener('click', loadDeadLetters);
  $('dl-purge').addEventListener('click', purgeGroup);
  $('dl-group').addEventListener('change', () => {
    const g = $('dl-group').value;
    location.hash = '#/dead-letters' + (g ? '/' + encodeURIComponent(g) : '');
  });
  $('trace-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const cid = $('trace-cid').value.trim();
    if (!cid) return;
    const target = '#/trace/' + encodeURIComponent(cid);
    // The route runs the trace; the same id again (same hash) runs it again here.
    if (location.hash === target) { state.trace = cid; runTrace(cid); } else location.hash = target;
  });
  window.addEventListener('hashchange', route);
  setInterval(tick, 1000);
  for (;;) {
    try {
      state.topo = await api('/console/api/topology');
      break;
    } catch (e) {
      $('graph').replaceChildren(h('p', { class: 'pad muted', text: 'Could not load the topology (' + e.message + '); retrying…' }));
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  for (const g of state.topo.groups) $('dl-group').append(h('option', { value: g.name, text: g.name }));
  legend();
  state.graph = layoutGraph(state.topo);
  drawGraph();
  route();
  poll();
}

document.addEventListener('DOMContentLoaded', start);
