// The dashboard in a real browser: Debian's chromium, headless, driven by
// playwright-core (which brings no browser of its own). Run by
// tests/blackbox/test_dashboard.py against a daemon it started:
//
//   CORRAL_URL=http://127.0.0.1:PORT CHROMIUM=/usr/bin/chromium SCENARIO=open|token \
//   [CORRAL_TOKEN=...] [SCREENSHOT=build/dashboard.png] node dashboard.mjs
//
// "open" expects models a (ready, 2 instances), b and c (unloaded); "token"
// expects a (ready) and b (unloaded) behind CORRAL_TOKEN. Each step prints a
// line; the first failure prints its reason and exits 1. Every wait is
// bounded, and the browser is closed whatever happens.
import { chromium } from 'playwright-core';

const URL = process.env.CORRAL_URL;
const TOKEN = process.env.CORRAL_TOKEN || '';
const SCENARIO = process.env.SCENARIO || 'open';
const WAIT_MS = 15000;

// ---- the daemon, from outside the page ----

async function api(path, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  const res = await fetch(URL + path, body === undefined ? { headers } : { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function until(what, predicate, timeout = WAIT_MS) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      if ((last = await predicate())) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const model = (name) => api(`/v1/models/${name}`);
const modelIs = (name, state) => until(`model ${name} to be ${state} (per /v1/models)`,
  async () => (await model(name)).state === state);

// ---- the page ----

const card = (name) => `[data-model="${name}"]`;

async function steps(page, log) {
  const shows = (name, state) => page.waitForSelector(`${card(name)}[data-state="${state}"]`, { timeout: WAIT_MS });
  const live = () => page.waitForSelector('#live[data-live="live"]', { timeout: WAIT_MS });

  if (SCENARIO === 'open') {
    await page.goto(URL + '/');
    await live();
    log('page loads; the event stream is live');

    await shows('a', 'ready');
    await shows('b', 'unloaded');
    await shows('c', 'unloaded');
    await until('two instance rows of a', async () => (await page.$$(`${card('a')} tbody tr`)).length === 2);
    log('shows the models and their instances');

    await api('/v2/repository/models/b/load', {});
    await shows('b', 'ready');
    await page.waitForSelector('#events li[data-kind="model.loaded"][data-model="b"]', { timeout: WAIT_MS });
    log('a load from outside shows: b ready, model.loaded in the feed');

    await page.click(`${card('c')} [data-action="load"]`, { timeout: WAIT_MS });
    await modelIs('c', 'ready');
    await shows('c', 'ready');
    log('the load button loaded c');

    await page.click(`${card('a')} [data-action="scale-up"]`, { timeout: WAIT_MS });
    await until('a to have a target of 3', async () => (await model('a')).target_instances === 3);
    await until('the page to show 3 for a', async () => (await page.textContent(`${card('a')} .target`)) === '3');
    await until('three instance rows of a', async () => (await page.$$(`${card('a')} tbody tr`)).length === 3);
    await page.click(`${card('a')} [data-action="scale-down"]`, { timeout: WAIT_MS });
    await until('a to have a target of 2', async () => (await model('a')).target_instances === 2);
    await until('the page to show 2 for a', async () => (await page.textContent(`${card('a')} .target`)) === '2');
    log('the scale buttons scaled a to 3 and back to 2');

    await page.click(`${card('b')} [data-action="unload"]`, { timeout: WAIT_MS });
    await modelIs('b', 'unloaded');
    await shows('b', 'unloaded');
    log('the unload button unloaded b');

    // Traffic, so the plots have something to draw: rate and latency come from /metrics.
    let sending = true;
    const traffic = (async () => {
      const body = { inputs: [{ name: 'INPUT0', datatype: 'INT32', shape: [2], data: [1, 2] }] };
      while (sending) {
        await api('/v2/models/a/infer', body);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      await until('a rate and latency on the page', async () => {
        const rate = Number(await page.textContent(`${card('a')} [data-value="rate"]`));
        const latency = await page.textContent(`${card('a')} [data-value="latency"]`);
        return rate > 0 && / \/ /.test(latency) ? `${rate} req/s, ${latency}` : false;
      }).then((seen) => log(`the plots show traffic: ${seen}`));
      await page.waitForTimeout(2500);  // one more sample, for the picture
      if (process.env.SCREENSHOT) {
        await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
        log(`screenshot: ${process.env.SCREENSHOT}`);
      }
    } finally {
      sending = false;
      await traffic;
    }
  } else if (SCENARIO === 'token') {
    await page.goto(URL + '/');
    await page.waitForSelector('#login', { state: 'visible', timeout: WAIT_MS });
    if (await page.isVisible('#main')) throw new Error('the models pane shows without a token');
    if ((await page.$$('[data-model]')).length) throw new Error('models are on the page without a token');
    log('without the token the page asks for it and shows nothing');

    await page.fill('#token', 'not-the-token');
    await page.click('#login button[type="submit"]');
    await page.waitForSelector('#login', { state: 'visible', timeout: WAIT_MS });
    await until('the refusal to be shown', async () => /refused/.test(await page.textContent('#login-error')));
    if ((await page.$$('[data-model]')).length) throw new Error('models are on the page after a wrong token');
    log('a wrong token is refused');

    await page.fill('#token', TOKEN);
    await page.click('#login button[type="submit"]');
    await shows('a', 'ready');
    await shows('b', 'unloaded');
    await live();
    log('with the token: the models and the live event stream');

    await page.click(`${card('b')} [data-action="load"]`, { timeout: WAIT_MS });
    await modelIs('b', 'ready');
    await shows('b', 'ready');
    log('the load button loaded b, with the token');

    await page.reload();
    await shows('b', 'ready');
    if (await page.isVisible('#login')) throw new Error('a reload asked for the token again');
    log('a reload keeps the token for the tab (sessionStorage)');
  } else {
    throw new Error(`unknown SCENARIO '${SCENARIO}'`);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // --no-sandbox: the tests run as root, where chromium's sandbox cannot start.
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
  timeout: WAIT_MS,
});
let failed = false;
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 820 } });
  // The token scenario's 401s are expected, and chromium logs each refused fetch.
  const expected = (text) => SCENARIO === 'token' && /status of 401 \(Unauthorized\)/.test(text);
  page.on('console', (m) => {
    if (m.type() === 'error' && !expected(m.text())) errors.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  const start = Date.now();
  await steps(page, (what) => console.log(`ok ${((Date.now() - start) / 1000).toFixed(1)}s  ${what}`));
  if (errors.length) throw new Error(`the page logged errors:\n  ${errors.join('\n  ')}`);
  console.log('ok no console errors');
} catch (e) {
  failed = true;
  console.log(`FAILED: ${e.message}`);
  if (errors.length && !/logged errors/.test(e.message)) console.log(`the page logged:\n  ${errors.join('\n  ')}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
