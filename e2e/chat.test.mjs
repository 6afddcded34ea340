// Browser end-to-end test of Palaver's web UI against a running gateway.
//
//   PALAVER_E2E_URL=http://127.0.0.1:8080 node --test e2e/
//
// `go test ./internal/gateway/web/` starts the gateway on a real Kafka broker
// and runs this. It drives Debian's Chromium (/usr/bin/chromium, or
// $PALAVER_E2E_CHROMIUM) through playwright-core; it never downloads a browser.
// On failure it saves screenshots into e2e/test-results/.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BASE = (process.env.PALAVER_E2E_URL || '').replace(/\/+$/, '');
const CHROMIUM = process.env.PALAVER_E2E_CHROMIUM || '/usr/bin/chromium';
// Provisions and deletes rooms as an operator would (the Go harness serves it).
const CONTROL = (process.env.PALAVER_E2E_CONTROL || '').replace(/\/+$/, '');
const RESULTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'test-results');
const RUN = Date.now().toString(36); // tells this run's messages from earlier ones'
const TIMEOUT = 20000;

let browser;
const pages = new Map(); // label -> page, for screenshots on failure

before(async () => {
  assert.ok(BASE, 'set PALAVER_E2E_URL to the gateway base URL, e.g. http://127.0.0.1:8080');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  if (browser) await browser.close();
});

/** Runs fn; on failure saves a screenshot of every open page, then rethrows. */
async function step(name, fn) {
  try {
    return await fn();
  } catch (err) {
    await mkdir(RESULTS, { recursive: true });
    for (const [label, page] of pages) {
      if (page.isClosed()) continue;
      const file = path.join(RESULTS, `${name}-${label}.png`.replace(/[^\w.-]+/g, '_'));
      await page.screenshot({ path: file, fullPage: true }).catch(() => {});
      process.stderr.write(`screenshot: ${file}\n`);
    }
    throw err;
  }
}

/** A signed-in page in its own browser context (its own sessionStorage). */
async function signIn(label, name, viewport = { width: 1100, height: 800 }) {
  const context = await browser.newContext({ viewport });
  // Record every connection state the page shows, for the reconnect check.
  await context.addInitScript(() => {
    window.__states = [];
    window.__dialogs = 0;
    document.addEventListener('DOMContentLoaded', () => {
      const el = document.getElementById('conn-state');
      const note = () => {
        if (window.__states.at(-1) !== el.dataset.state) window.__states.push(el.dataset.state);
      };
      note();
      new MutationObserver(note).observe(el, { attributes: true, attributeFilter: ['data-state'] });
    });
  });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  pages.set(label, page);
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('dialog', async (d) => {
    problems.push(`dialog: ${d.message()}`);
    await d.dismiss();
  });
  await page.goto(BASE + '/');
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await waitState(page, 'connected');
  await page.getByRole('heading', { name: 'Lobby', level: 2 }).waitFor();
  return { context, page, problems };
}

async function waitState(page, state) {
  await page.locator(`#conn-state[data-state="${state}"]`).waitFor();
}

function composer(page) {
  return page.getByRole('textbox', { name: /^Message / });
}

async function send(page, text) {
  await composer(page).fill(text);
  await composer(page).press('Enter');
  await message(page, text).waitFor(); // shown as stored: acked
}

/** The stored (not pending) message whose text is exactly text. */
function message(page, text) {
  return page.locator('#messages li.msg').filter({
    has: page.locator('p.text', { hasText: new RegExp(`^${escapeRegExp(text)}$`) }),
  });
}

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The texts of this run's stored messages that start with prefix, in page order. */
async function texts(page, prefix) {
  const all = await page.locator('#messages li.msg p.text').allTextContents();
  return all.filter((t) => t.startsWith(prefix) && t.includes(RUN));
}

async function assertShownWithSenderAndTime(page, text, sender) {
  const m = message(page, text);
  await m.waitFor();
  assert.equal(await m.count(), 1, `"${text}" is shown once`);
  assert.equal(await m.locator('.sender').textContent(), sender);
  const datetime = await m.locator('time').getAttribute('datetime');
  const when = Date.parse(datetime);
  assert.ok(Math.abs(Date.now() - when) < 5 * 60 * 1000, `message time ${datetime} is about now`);
  assert.match(await m.locator('time').textContent(), /\d{1,2}[:.]\d{2}/);
}

/** POSTs messages over the HTTP API, as a bot, respecting rate limits. */
async function postMessages(room, name, texts) {
  const login = await fetch(`${BASE}/v1/dev/login`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name }),
  });
  assert.equal(login.status, 200, 'dev login');
  const { token } = await login.json();
  for (const [i, text] of texts.entries()) {
    const id = `e2e-${RUN}-${i}`;
    for (let attempt = 0; ; attempt++) {
      const resp = await fetch(`${BASE}/v1/rooms/${room}/messages`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
        body: JSON.stringify({ id, text }),
      });
      if (resp.status === 201 || resp.status === 200) break;
      if ((resp.status === 429 || resp.status === 503) && attempt < 20) {
        await new Promise((r) => setTimeout(r, 250 * (attempt + 1)));
        continue;
      }
      assert.fail(`POST message: HTTP ${resp.status} ${await resp.text()}`);
    }
  }
}

/** Waits until the gateway lists room (its registry caught up). */
async function roomListed(name) {
  const login = await fetch(`${BASE}/v1/dev/login`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'Watcher' }),
  });
  const { token } = await login.json();
  for (let i = 0; i < 100; i++) {
    const resp = await fetch(`${BASE}/v1/rooms`, { headers: { Authorization: `Bearer ${token}` } });
    const { rooms } = await resp.json();
    if (rooms.some((r) => r.name === name)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`room ${name} never listed`);
}

describe('web UI', { timeout: 180000 }, () => {
  let ada;
  let grace;

  test('two people sign in and see each other\'s messages with sender and time', async () => {
    await step('sign-in', async () => {
      ada = await signIn('ada', 'Ada');
      grace = await signIn('grace', 'Grace');
    });
    await step('ada-to-grace', async () => {
      const text = `hello from Ada ${RUN}`;
      await send(ada.page, text);
      await assertShownWithSenderAndTime(grace.page, text, 'Ada');
      await assertShownWithSenderAndTime(ada.page, text, 'Ada');
    });
    await step('grace-to-ada', async () => {
      const text = `hello from Grace ${RUN}`;
      await send(grace.page, text);
      await assertShownWithSenderAndTime(ada.page, text, 'Grace');
    });
  });

  test('a page that was offline shows what it missed, once and in order', async () => {
    await step('offline', async () => {
      const statesBefore = (await grace.page.evaluate(() => window.__states)).length;
      await grace.context.setOffline(true);
      await waitState(grace.page, 'offline');
      const missed = [`missed one ${RUN}`, `missed two ${RUN}`];
      for (const text of missed) await send(ada.page, text);
      // Nothing can arrive while offline.
      assert.equal(await message(grace.page, missed[0]).count(), 0);

      await grace.context.setOffline(false);
      await waitState(grace.page, 'connected');
      for (const text of missed) await message(grace.page, text).waitFor();
      const shown = await texts(grace.page, 'missed ');
      assert.deepEqual(shown, missed, 'each missed message exactly once, in order');

      const states = (await grace.page.evaluate(() => window.__states)).slice(statesBefore);
      const r = states.indexOf('reconnecting');
      assert.ok(r >= 0 && states.indexOf('connected', r) > r,
        `connection state went through reconnecting -> connected: ${states.join(' -> ')}`);

      // And the conversation goes on both ways.
      const after = `after the outage ${RUN}`;
      await send(grace.page, after);
      await message(ada.page, after).waitFor();
    });
  });

  test('a message with markup renders as text', async () => {
    await step('xss', async () => {
      const text = `<img src=x onerror=alert(1)> ${RUN}`;
      await send(ada.page, text);
      const m = message(grace.page, text);
      await m.waitFor();
      assert.equal(await m.locator('p.text').textContent(), text);
      assert.equal(await grace.page.locator('#messages img').count(), 0, 'no img element was made');
      await grace.page.waitForTimeout(300); // an onerror would have fired by now
      assert.deepEqual(grace.problems, []);
      assert.deepEqual(ada.problems, []);
    });
  });

  test('scroll-back loads older messages', async () => {
    await step('scroll-back', async () => {
      const room = 'random';
      const prefix = `old ${RUN} `;
      const all = Array.from({ length: 70 }, (_, i) => `${prefix}${String(i).padStart(2, '0')}`);
      await postMessages(room, 'Archivist', all);

      const { page } = grace;
      await page.locator(`a[data-room="${room}"]`).click();
      await page.getByRole('heading', { name: 'Random', level: 2 }).waitFor();
      await message(page, all.at(-1)).waitFor();
      const first = await texts(page, prefix);
      assert.ok(first.length <= 50, `joining shows the latest 50 at most, got ${first.length}`);
      assert.deepEqual(first, all.slice(all.length - first.length), 'the latest ones, in order');

      // Scrolling to the top loads older pages until the first message shows.
      for (let i = 0; i < 10 && (await message(page, all[0]).count()) === 0; i++) {
        await page.locator('#log-scroll').evaluate((el) => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); });
        await page.waitForTimeout(300);
      }
      await message(page, all[0]).waitFor();
      assert.deepEqual(await texts(page, prefix), all, 'every message once, in order, after scroll-back');
      assert.deepEqual(grace.problems, []);
    });
  });

  test('works on a 360 px wide screen', async () => {
    await step('narrow', async () => {
      const narrow = await signIn('narrow', 'Lin', { width: 360, height: 740 });
      const { page } = narrow;
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `no horizontal scrolling at 360 px (${overflow}px too wide)`);
      const text = `from a phone ${RUN}`;
      await send(page, text);
      await message(ada.page, text).waitFor();
      for (const sel of ['#composer-input', '#composer-send', '#conn-state', 'a[data-room="lobby"]']) {
        const box = await page.locator(sel).boundingBox();
        assert.ok(box && box.x >= 0 && box.x + box.width <= 360, `${sel} is on screen: ${JSON.stringify(box)}`);
      }
      await narrow.context.close();
      pages.delete('narrow');
    });
  });

  test('a room deleted while open says so', { skip: !CONTROL && 'needs PALAVER_E2E_CONTROL' }, async () => {
    await step('room-deleted', async () => {
      const name = `gone-${RUN}`;
      const made = await fetch(`${CONTROL}/rooms/${name}?display_name=Doomed`, { method: 'POST' });
      assert.equal(made.status, 201, await made.text());
      await roomListed(name);
      const doomed = await signIn('doomed', 'Mallory');
      const { page } = doomed;
      await page.locator(`a[data-room="${name}"]`).click();
      await page.getByRole('heading', { name: 'Doomed', level: 2 }).waitFor();
      await send(page, `last words ${RUN}`); // joined: the send was acknowledged

      const gone = await fetch(`${CONTROL}/rooms/${name}`, { method: 'DELETE' });
      assert.equal(gone.status, 204);
      await page.locator('#room-error', { hasText: 'This room does not exist (any more).' }).waitFor();
      await waitState(page, 'connected'); // the other rooms carry on
      assert.deepEqual(doomed.problems, []);
      await doomed.context.close();
      pages.delete('doomed');
    });
  });

  test('a room whose topic was created again starts over', { skip: !CONTROL && 'needs PALAVER_E2E_CONTROL' }, async () => {
    await step('topic-recreated', async () => {
      const name = `again-${RUN}`;
      const made = await fetch(`${CONTROL}/rooms/${name}?display_name=Phoenix`, { method: 'POST' });
      assert.equal(made.status, 201, await made.text());
      await roomListed(name);
      const phoenix = await signIn('phoenix', 'Phoebe');
      const { page } = phoenix;
      await page.locator(`a[data-room="${name}"]`).click();
      await page.getByRole('heading', { name: 'Phoenix', level: 2 }).waitFor();
      const old = `before the topic was created again ${RUN}`;
      await send(page, old);

      const again = await fetch(`${CONTROL}/rooms/${name}/recreate`, { method: 'POST' });
      assert.equal(again.status, 204, await again.text());
      // The gateway tells the page, which joins again with its cursor; the
      // cursor is reset, and the cut history leaves the screen.
      await message(page, old).waitFor({ state: 'detached' });
      const fresh = `after the topic was created again ${RUN}`;
      await postMessages(name, 'Bot', [fresh]);
      await message(page, fresh).waitFor();
      assert.equal(await message(page, old).count(), 0);
      await waitState(page, 'connected');
      assert.deepEqual(phoenix.problems, []);
      await phoenix.context.close();
      pages.delete('phoenix');
    });
  });

  test('signing out forgets the token', async () => {
    await step('sign-out', async () => {
      const { page } = ada;
      assert.ok(await page.evaluate(() => sessionStorage.getItem('palaver.session')));
      assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in localStorage');
      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.getByLabel('Your name').waitFor();
      assert.equal(await page.evaluate(() => sessionStorage.getItem('palaver.session')), null);
    });
  });
});
