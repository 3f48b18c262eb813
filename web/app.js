// corral's dashboard: every model and instance, plots of the last minutes,
// the live event feed, and load, unload and scale buttons.
//
// Data: /v1/models (state, queue, instances) and /metrics (request
// counters and the latency histogram) are polled every POLL_MS; rates and
// quantiles come from the difference between two scrapes, as Prometheus'
// rate() and histogram_quantile() would compute them. /v1/events is read
// with fetch (not EventSource, which cannot send the Authorization
// header), and each lifecycle event refreshes the models at once.
//
// The token, when the daemon has one, is asked for on the first 401, kept
// in this tab's sessionStorage and sent as "Authorization: Bearer"; never
// in a URL and never in a cookie (docs/security.md says why).
//
// Text from the daemon (names, reasons, event fields) is only ever set as
// textContent, never parsed as HTML.

const POLL_MS = 2000;
const WINDOW_S = 300;       // the plots show the last five minutes
const MIN_SPAN_S = 60;      // and a minute at least, while the history is shorter
const MAX_EVENTS = 200;     // the feed keeps the newest ones
const TOKEN_KEY = 'corral.token';
const SERIES = 8;           // style.css's --s0 .. --s7: the plots' colours, and the .s0 .. .s7 classes

const $ = (sel, root = document) => root.querySelector(sel);

const S = {
  token: sessionStorage.getItem(TOKEN_KEY),
  signedOut: false,       // a 401 came: waiting for the token form
  tokenWaiters: [],       // resolved when a token is entered
  models: new Map(),      // name -> {card, data, history: [{t, rate, p50, p99, queue, mem: {id: bytes}}]}
  lastScrape: null,       // {t, byModel} of the previous /metrics
  lastEventId: 0,         // 0: the whole history the daemon keeps, on the first connection
  refreshTimer: 0,
  pollTimer: 0,
  polling: false,
};

class Unauthorized extends Error {}

// ---- talking to the daemon ----

async function call(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (S.token)
    headers.set('Authorization', `Bearer ${S.token}`);
  const res = await fetch(path, { ...options, headers, cache: 'no-store' });
  if (res.status === 401) {
    const body = await res.json().catch(() => ({}));
    signOut(S.token ? 'The daemon refused that token.' : '');
    throw new Unauthorized(body.error || 'unauthorized');
  }
  return res;
}

async function callJSON(path, options) {
  const res = await call(path, options);
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON: the status says it */ }
  if (!res.ok)
    throw new Error(body?.error ?? `${res.status} ${res.statusText}`);
  return body;
}

const post = (body) => ({ method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
const modelPath = (name) => encodeURIComponent(name);

// ---- the token ----

function signOut(message) {
  if (S.signedOut)
    return;
  S.signedOut = true;
  S.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('#main').hidden = true;
  $('#forget').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  // What was shown stays with the token: a signed-out tab holds no data.
  for (const entry of S.models.values()) entry.card.remove();
  S.models.clear();
  S.lastScrape = null;
  $('#events').replaceChildren();
  S.lastEventId = 0;
  setLive('signed-out', 'signed out');
  $('#token').focus();
}

function waitForToken() {
  return S.signedOut ? new Promise((resolve) => S.tokenWaiters.push(resolve)) : Promise.resolve();
}

function signIn(token) {
  S.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  S.signedOut = false;
  $('#login').hidden = true;
  $('#main').hidden = false;
  $('#forget').hidden = false;
  for (const resolve of S.tokenWaiters.splice(0))
    resolve();
  showServer();
  poll();
}

$('#login').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = $('#token').value.trim();
  $('#token').value = '';
  if (token)
    signIn(token);
});

$('#forget').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

// ---- formatting ----

function fmtBytes(n) {
  if (n == null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}

function fmtSeconds(s) {
  if (s == null || !isFinite(s)) return '–';
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(s < 0.01 ? 2 : 1)} ms`;
  return `${s.toFixed(2)} s`;
}

function fmtUptime(s) {
  if (!s) return '–';
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`;
}

function fmtRate(r) {
  if (r == null) return '–';
  return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2);
}

// ---- /metrics ----

const WANTED = new Set(['nv_inference_request_success', 'nv_inference_request_failure',
  'corral_request_duration_seconds_bucket']);

function unescapeLabel(v) {
  return v.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
}

// The per-model figures this page plots, from Prometheus' text format.
function parseMetrics(text) {
  const byModel = new Map();
  const entry = (model) => {
    let e = byModel.get(model);
    if (!e) byModel.set(model, e = { requests: 0, buckets: new Map() });
    return e;
  };
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || !WANTED.has(m[1])) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels[k] = unescapeLabel(v);
    if (labels.model == null) continue;
    const value = Number(m[3]);
    const e = entry(labels.model);
    if (m[1] === 'corral_request_duration_seconds_bucket')
      e.buckets.set(labels.le === '+Inf' ? Infinity : Number(labels.le), value);
    else
      e.requests += value;   // successes and every failure reason: all answered requests
  }
  return byModel;
}

// The q-quantile of the requests counted in cumulative buckets [[le, count]],
// interpolated within its bucket as histogram_quantile() does; null for none.
function quantile(q, buckets) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return lower;  // past the last bound: the bound is all we know
      return count === below ? lower : lower + (le - lower) * (rank - below) / (count - below);
    }
    lower = le;
    below = count;
  }
  return lower;
}

// Rate and quantiles over the interval between two scrapes of one model.
function interval(prev, cur, dt) {
  if (!prev || !cur || dt <= 0 || cur.requests < prev.requests)
    return { rate: null, p50: null, p99: null }; // the first scrape, or a restarted daemon
  const delta = [...cur.buckets].sort((a, b) => a[0] - b[0])
    .map(([le, count]) => [le, count - (prev.buckets.get(le) ?? 0)]);
  return { rate: (cur.requests - prev.requests) / dt, p50: quantile(0.5, delta), p99: quantile(0.99, delta) };
}

// ---- plots ----

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// Lines of [t, value] points (null values leave a gap), the newest at the
// right edge. The span grows with the history up to WINDOW_S seconds, at
// least MIN_SPAN_S, and is written in the bottom-left corner.
function drawChart(canvas, series, format) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const now = Date.now() / 1000;
  let first = now;
  for (const s of series)
    if (s.points.length && s.points[0][0] < first) first = s.points[0][0];
  const span = Math.min(WINDOW_S, Math.max(MIN_SPAN_S, now - first));
  const t0 = now - span;
  let max = 0;
  for (const s of series)
    for (const [, v] of s.points)
      if (v != null && v > max) max = v;
  const top = max > 0 ? max * 1.15 : 1;
  const pad = 12;   // room for the scale's label
  const x = (t) => ((t - t0) / span) * w;
  const y = (v) => h - 1 - (v / top) * (h - pad - 1);
  ctx.font = '10px system-ui, sans-serif';
  ctx.fillStyle = cssVar('--muted');
  ctx.fillText(max > 0 ? format(max) : '', 2, 9);
  ctx.fillText(span >= 90 ? `${Math.round(span / 60)} min` : `${Math.round(span)} s`, 2, h - 3);
  ctx.strokeStyle = cssVar('--line');
  ctx.setLineDash([2, 3]);
  ctx.beginPath();
  ctx.moveTo(0, y(max > 0 ? max : 0) + 0.5);
  ctx.lineTo(w, y(max > 0 ? max : 0) + 0.5);
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.lineWidth = 1.5;
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.beginPath();
    let pen = false;
    for (const [t, v] of s.points) {
      if (v == null || t < t0) { pen = false; continue; }
      if (pen) ctx.lineTo(x(t), y(v));
      else ctx.moveTo(x(t), y(v));
      pen = true;
    }
    ctx.stroke();
  }
}

const color = (k) => cssVar(`--s${k % SERIES}`);

// Memory has a line per instance, in the colour of its id in the table.
function drawCharts(entry) {
  const h = entry.history, card = entry.card;
  const pts = (key) => h.map((p) => [p.t, p[key]]);
  drawChart($('[data-chart="rate"]', card), [{ points: pts('rate'), color: color(0) }], fmtRate);
  drawChart($('[data-chart="latency"]', card),
    [{ points: pts('p50'), color: color(0) }, { points: pts('p99'), color: color(1) }], fmtSeconds);
  drawChart($('[data-chart="queue"]', card), [{ points: pts('queue'), color: color(0) }], (v) => v.toFixed(0));
  const ids = [...new Set(h.flatMap((p) => Object.keys(p.mem)))].map(Number).sort((a, b) => a - b);
  drawChart($('[data-chart="memory"]', card),
    ids.map((id) => ({ points: h.map((p) => [p.t, p.mem[id] ?? null]), color: color(id) })), fmtBytes);
}

// ---- models ----

function cardFor(name) {
  let entry = S.models.get(name);
  if (entry) return entry;
  const card = $('#model-card').content.firstElementChild.cloneNode(true);
  card.dataset.model = name;
  $('.name', card).textContent = name;
  card.addEventListener('click', (e) => {
    const button = e.target.closest('button[data-action]');
    if (button) act(name, button);
  });
  entry = { card, data: null, history: [] };
  S.models.set(name, entry);
  return entry;
}

function renderModel(entry, m) {
  const card = entry.card;
  entry.data = m;
  card.dataset.state = m.state;
  $('.state', card).textContent = m.state;
  const ready = m.instances.filter((i) => i.state === 'ready').length;
  const facts = [`${m.runtime ?? '?'}, ${m.load ?? '?'}`, `queue ${m.queue}${m.max_queue ? ` / ${m.max_queue}` : ''}`,
    `${ready} of ${m.target_instances} ready`];
  if (m.changed) facts.push('manifest changed');
  $('.facts', card).textContent = facts.join(' · ');
  $('.reason', card).textContent = m.manifest_error || (m.state === 'failed' ? m.reason : '') || '';
  $('.target', card).textContent = m.target_instances;
  const busy = m.state === 'loading' || m.state === 'unloading';
  const live = m.state === 'ready' || m.state === 'loading';
  const loadButton = $('[data-action="load"]', card);
  loadButton.textContent = m.state === 'ready' && m.changed ? 'Reload' : 'Load';
  setEnabled(loadButton, m.state === 'unloaded' || m.state === 'failed' || (m.state === 'ready' && m.changed));
  setEnabled($('[data-action="unload"]', card), !busy && m.state !== 'unloaded');
  setEnabled($('[data-action="scale-down"]', card), live && m.target_instances > 1);
  setEnabled($('[data-action="scale-up"]', card), live);

  const rows = m.instances.map((i) => {
    const tr = document.createElement('tr');
    tr.dataset.state = i.state;
    const cells = [i.id, null, i.pid ?? '–', fmtBytes(i.rss_bytes), i.requests, i.inflight, i.restarts,
      fmtUptime(i.uptime_s)];
    cells.forEach((text, k) => {
      const td = document.createElement('td');
      if (k === 0)
        td.className = `s${i.id % SERIES}`;
      if (k === 1) {
        const badge = document.createElement('span');
        badge.className = 'state';
        badge.textContent = i.state + (i.retiring ? ' (retiring)' : i.replacing ? ' (replacing)' : '');
        td.append(badge);
      } else {
        td.textContent = text;
      }
      tr.append(td);
    });
    return tr;
  });
  $('tbody', card).replaceChildren(...rows);
  $('[data-value="queue"]', card).textContent = m.queue;
  $('[data-value="memory"]', card).textContent =
    `Σ ${fmtBytes(m.instances.reduce((sum, i) => sum + (i.rss_bytes || 0), 0))}`;
}

// A button in entry's card is held while the daemon has its answer in hand
// (the busy flag outlives the render the model's events cause meanwhile).
function setEnabled(button, enabled) {
  button.disabled = !enabled || button.dataset.busy === '1';
}

// Cards in the daemon's order; one already in its place is left alone, so
// a refresh never moves the button under the pointer.
function renderModels(list) {
  const seen = new Set();
  let prev = $('#no-models');
  for (const m of list) {
    seen.add(m.name);
    const entry = cardFor(m.name);
    renderModel(entry, m);
    if (prev.nextElementSibling !== entry.card) prev.after(entry.card);
    prev = entry.card;
  }
  for (const [name, entry] of S.models)
    if (!seen.has(name)) {
      entry.card.remove();
      S.models.delete(name);
    }
  $('#no-models').hidden = list.length > 0;
}

async function act(name, button) {
  const entry = S.models.get(name);
  const m = entry?.data;
  if (!m) return;
  const action = button.dataset.action;
  button.dataset.busy = '1';
  button.disabled = true;
  try {
    if (action === 'load')
      await callJSON(`/v2/repository/models/${modelPath(name)}/load`, post({}));
    else if (action === 'unload')
      await callJSON(`/v2/repository/models/${modelPath(name)}/unload`, post({}));
    else
      await callJSON(`/v1/models/${modelPath(name)}/scale`,
        post({ instances: m.target_instances + (action === 'scale-up' ? 1 : -1) }));
    notice('');
  } catch (e) {
    if (!(e instanceof Unauthorized))
      notice(`${action} ${name}: ${e.message}`);
  } finally {
    delete button.dataset.busy;
    await refreshModels();   // which enables the button again if the new state allows
  }
}

// ---- polling ----

async function refreshModels() {
  clearTimeout(S.refreshTimer);
  S.refreshTimer = 0;
  if (S.signedOut) return;
  try {
    renderModels((await callJSON('/v1/models')).models);
  } catch (e) {
    if (!(e instanceof Unauthorized)) notice(`/v1/models: ${e.message}`);
  }
}

// Events come in bursts (a load is several): one refresh for each burst.
function refreshSoon() {
  if (!S.refreshTimer)
    S.refreshTimer = setTimeout(refreshModels, 100);
}

// One poll at a time: a sign-in while one is on its way leaves the next to it.
async function poll() {
  clearTimeout(S.pollTimer);
  if (S.signedOut || S.polling) return;
  S.polling = true;
  try {
    const [models, metricsRes] = await Promise.all([callJSON('/v1/models'), call('/metrics')]);
    const t = Date.now() / 1000;
    const scrape = metricsRes.ok ? parseMetrics(await metricsRes.text()) : new Map();
    renderModels(models.models);
    const prev = S.lastScrape;
    for (const m of models.models) {
      const entry = S.models.get(m.name);
      const { rate, p50, p99 } = interval(prev?.byModel.get(m.name), scrape.get(m.name), prev ? t - prev.t : 0);
      const mem = {};
      for (const i of m.instances)
        if (i.pid != null) mem[i.id] = i.rss_bytes;
      entry.history.push({ t, rate, p50, p99, queue: m.queue, mem });
      while (entry.history.length && entry.history[0].t < t - WINDOW_S - POLL_MS / 1000)
        entry.history.shift();
      $('[data-value="rate"]', entry.card).textContent = fmtRate(rate);
      const latency = $('[data-value="latency"]', entry.card);
      if (p50 == null) {
        latency.textContent = '–';
      } else {
        const part = (text, k) => Object.assign(document.createElement('span'), { className: `s${k}`, textContent: text });
        latency.replaceChildren(part(fmtSeconds(p50), 0), ' / ', part(fmtSeconds(p99), 1));
      }
      drawCharts(entry);
    }
    S.lastScrape = { t, byModel: scrape };
    if ($('#notice').dataset.source === 'poll') notice('');
  } catch (e) {
    if (!(e instanceof Unauthorized)) notice(`cannot reach the daemon: ${e.message}`, 'poll');
  } finally {
    S.polling = false;
  }
  if (!S.signedOut)
    S.pollTimer = setTimeout(poll, POLL_MS);
}

function notice(text, source = '') {
  const el = $('#notice');
  el.textContent = text;
  el.dataset.source = source;
  el.hidden = !text;
}

function setLive(state, text) {
  const el = $('#live');
  el.dataset.live = state;
  el.textContent = text ?? state;
}

async function showServer() {
  try {
    const v2 = await callJSON('/v2');
    $('#server').textContent = `${v2.name ?? ''} ${v2.version ?? ''}`.trim();
  } catch { /* the poll reports what is wrong */ }
}

// ---- the event feed ----

const GOOD = /\.(loaded|ready)$/;
const BAD = /\.(failed|killed|restarting)$/;

function addEvent(kind, data) {
  const li = document.createElement('li');
  const bad = BAD.test(kind) || (kind === 'instance.exited' && !data.expected) ||
    (kind === 'pull' && data.state === 'failed');
  const good = GOOD.test(kind) || (kind === 'pull' && data.state === 'done');
  li.className = bad ? 'bad' : good ? 'good' : '';
  li.dataset.kind = kind;
  if (data.model != null) li.dataset.model = data.model;
  const time = document.createElement('time');
  const when = new Date(data.time);
  time.dateTime = data.time;
  time.textContent = isNaN(when) ? '' : when.toLocaleTimeString();
  const k = document.createElement('span');
  k.className = 'kind';
  k.textContent = kind;
  const rest = Object.entries(data).filter(([key]) => key !== 'time')
    .map(([key, v]) => `${key}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  li.append(time, k, document.createTextNode(' ' + rest.join(' ')));
  const list = $('#events');
  list.prepend(li);
  while (list.children.length > MAX_EVENTS)
    list.lastElementChild.remove();
}

// One server-sent event's block of lines (the daemon's framing: LF line ends).
function dispatchBlock(block) {
  let id = null, kind = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (!line || line[0] === ':') continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'id') id = value;
    else if (field === 'event') kind = value;
    else if (field === 'data') data.push(value);
  }
  if (id != null && /^\d+$/.test(id)) S.lastEventId = Number(id);
  if (!data.length) return;
  let payload;
  try { payload = JSON.parse(data.join('\n')); } catch { return; }
  addEvent(kind, payload);
  // a pulled model is new: the list is read again
  if (kind.startsWith('model.') || kind.startsWith('instance.') || (kind === 'pull' && payload.state === 'done'))
    refreshSoon();
}

async function streamEvents() {
  let delay = 500;
  for (;;) {
    await waitForToken();
    try {
      const res = await call('/v1/events',
        { headers: { Accept: 'text/event-stream', 'Last-Event-ID': String(S.lastEventId) } });
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      setLive('live');
      delay = 500;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          dispatchBlock(buf.slice(0, end));
          buf = buf.slice(end + 2);
        }
      }
    } catch (e) {
      if (e instanceof Unauthorized) continue;
    }
    if (!S.signedOut) setLive('reconnecting');
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

// ---- start ----

window.addEventListener('resize', () => S.models.forEach(drawCharts));
$('#forget').hidden = !S.token;
showServer();
poll();
streamEvents();
