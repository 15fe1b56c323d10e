// Tests of the JavaScript client under Node 20 with the ws package,
// against real `parley serve` processes (PARLEY_BIN: the binary, which
// clients/js/js_test.go builds and runs these with).
import { test as nodeTest } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { ParleyClient, ParleyError, Codes } from '../parley.js';

const BIN = process.env.PARLEY_BIN;
if (!BIN) throw new Error('PARLEY_BIN names the parley binary (go test ./clients/js runs these)');

// test bounds each test: a client that never resolves fails it, not CI.
const test = (name, fn) => nodeTest(name, { timeout: 30000 }, fn);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// until polls cond every 10 ms for at most 15 s.
async function until(what, cond) {
  const deadline = Date.now() + 15000;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// freePort returns a port nothing listens on now.
function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

// parley starts `parley serve` on 127.0.0.1:port with args and resolves
// once it listens. stop(signal) ends it.
function parley(t, port, ...args) {
  const proc = spawn(BIN, ['serve', '--addr', `127.0.0.1:${port}`, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const ready = new Promise((resolve, reject) => {
    proc.stderr.on('data', (b) => {
      log += b;
      if (/msg=listening addr=/.test(log)) resolve();
    });
    proc.on('exit', (code) => reject(new Error(`parley serve exited (${code}): ${log}`)));
  });
  const exited = new Promise((r) => proc.on('exit', r));
  const node = {
    url: `ws://127.0.0.1:${port}/ws`,
    stop: async (signal = 'SIGTERM') => { if (proc.exitCode === null && proc.signalCode === null) { proc.kill(signal); await exited; } },
  };
  t.after(() => node.stop('SIGKILL'));
  return ready.then(() => node);
}

// observer is a plain WebSocket client in the lobby: say(text) says and
// waits for the echo; texts() lists the lobby's messages it saw.
async function observer(t, url) {
  const ws = new WebSocket(url);
  const msgs = [];
  ws.on('message', (d) => { const e = JSON.parse(d.toString()); if (e.type === 'message' && e.room === 'lobby') msgs.push(e); });
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  t.after(() => ws.terminate());
  return {
    texts: () => msgs.map((m) => m.text),
    say: async (text) => {
      ws.send(JSON.stringify({ type: 'say', room: 'lobby', text }));
      await until(`the echo of ${text}`, () => msgs.some((m) => m.text === text));
    },
  };
}

// record keeps a client's lobby messages (history entries included) and
// its disconnections.
function record(c) {
  const r = { msgs: [], drops: 0, gaps: 0, auths: 0 };
  c.on('message', (m) => { if (m.room === 'lobby') r.msgs.push(m); });
  c.on('history', (h) => {
    if (h.room !== 'lobby') return;
    if (h.gap) r.gaps++;
    for (const m of h.messages) if (m.type === 'message') r.msgs.push(m);
  });
  c.on('disconnected', () => r.drops++);
  c.on('auth', () => r.auths++);
  r.texts = () => r.msgs.map((m) => m.text);
  return r;
}

// onceInOrder fails unless the sequence numbers rise strictly.
function onceInOrder(msgs) {
  for (let i = 1; i < msgs.length; i++) {
    assert.ok(msgs[i].seq > msgs[i - 1].seq, `seq ${msgs[i].seq} (${msgs[i].text}) after ${msgs[i - 1].seq} (${msgs[i - 1].text})`);
  }
}

const fast = { minBackoff: 20, maxBackoff: 200, WebSocket };

test('resumes without a gap or a duplicate across a server restart', async (t) => {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'parley-js-'));
  let node = await parley(t, port, '--data-dir', dir);
  const bot = new ParleyClient({ url: node.url, nick: 'bot', ...fast });
  t.after(() => bot.close());
  const rec = record(bot);
  await bot.connect();
  await bot.say('lobby', 'b1');
  let obs = await observer(t, node.url);
  await obs.say('o1');
  await node.stop('SIGTERM');
  await until('the bot to see its connection end', () => rec.drops >= 1);
  const offline = bot.say('lobby', 'b2'); // said while the server is down
  node = await parley(t, port, '--data-dir', dir);
  obs = await observer(t, node.url);
  await obs.say('o2');
  await offline;
  await obs.say('o3');
  await until('the bot to see o3', () => rec.texts().includes('o3'));
  onceInOrder(rec.msgs);
  // b2 and o2 race (the bot reconnects as the server comes back); the
  // rest of the order is known.
  assert.deepEqual(rec.texts().slice(0, 2), ['b1', 'o1']);
  assert.deepEqual([...rec.texts()].sort(), ['b1', 'b2', 'o1', 'o2', 'o3']);
  assert.equal(rec.texts().at(-1), 'o3');
  assert.equal(obs.texts().filter((x) => x === 'b2').length, 1, 'b2 heard once');
});

// A TCP proxy whose forwarding can be stopped one way, as a network that
// drops a message, and cut.
async function proxy(t, target) {
  const port = await freePort();
  const pairs = new Set();
  const state = { up: true, down: true, refuse: false };
  const server = net.createServer((c) => {
    if (state.refuse) { c.destroy(); return; }
    const s = net.connect(target, '127.0.0.1');
    pairs.add([c, s]);
    c.on('data', (b) => { if (state.up) s.write(b); });
    s.on('data', (b) => { if (state.down) c.write(b); });
    c.on('error', () => s.destroy()); s.on('error', () => c.destroy());
    c.on('close', () => s.destroy()); s.on('close', () => c.destroy());
  }).listen(port, '127.0.0.1');
  t.after(() => { server.close(); for (const [a, b] of pairs) { a.destroy(); b.destroy(); } });
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    state,
    cut: () => { for (const [a, b] of pairs) { a.destroy(); b.destroy(); } pairs.clear(); },
  };
}

test('a message lost with its connection is said again and heard once', async (t) => {
  const port = await freePort();
  const node = await parley(t, port, '--max-connections-per-addr', '-1', '--connect-rate-per-addr', '-1');
  const p = await proxy(t, port);
  const obs = await observer(t, node.url);
  const bot = new ParleyClient({ url: p.url, nick: 'bot', ...fast });
  t.after(() => bot.close());
  const rec = record(bot);
  await bot.connect();
  await bot.say('lobby', 'first');
  for (const [lost, way] of [['lost going', 'up'], ['lost coming back', 'down']]) {
    p.state[way] = false; // the say reaches the server but its echo does not, or the other way round
    const said = bot.say('lobby', lost);
    if (way === 'down') await until('the server to have it', () => obs.texts().includes(lost));
    else await sleep(100);
    p.cut();
    p.state[way] = true;
    await said;
  }
  await obs.say('end');
  await until('the bot to see end', () => rec.texts().includes('end'));
  assert.deepEqual(obs.texts(), ['first', 'lost going', 'lost coming back', 'end']);
  onceInOrder(rec.msgs);
  assert.deepEqual(rec.texts(), ['first', 'lost going', 'lost coming back', 'end']);
});

test('resumes a room past its history size from where it left it', async (t) => {
  const port = await freePort();
  const node = await parley(t, port, '--history-size', '3', '--max-connections-per-addr', '-1', '--connect-rate-per-addr', '-1');
  const p = await proxy(t, port);
  const obs = await observer(t, node.url);
  const bot = new ParleyClient({ url: p.url, nick: 'bot', ...fast });
  t.after(() => bot.close());
  const rec = record(bot);
  await bot.connect();
  await obs.say('before');
  await until('the bot to see before', () => rec.texts().includes('before'));
  p.state.refuse = true;
  p.cut();
  await until('the bot to drop', () => rec.drops >= 1);
  const missed = ['m1', 'm2', 'm3', 'm4', 'm5', 'm6'];
  for (const m of missed) await obs.say(m); // twice the history size, within the resume window
  p.state.refuse = false;
  await obs.say('after');
  await until('the bot to see after', () => rec.texts().includes('after'));
  onceInOrder(rec.msgs);
  assert.deepEqual(rec.texts(), ['before', ...missed, 'after']);
  assert.equal(rec.gaps, 0);
});

function jwt(secret, claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

test('refreshes its token before it expires', async (t) => {
  const secret = 'a-secret-of-at-least-32-bytes-for-hs256';
  const file = join(mkdtempSync(join(tmpdir(), 'parley-js-')), 'secret');
  writeFileSync(file, secret);
  const node = await parley(t, await freePort(), '--jwt-secret', file);
  let calls = 0;
  const token = async () => {
    calls++;
    const now = Math.floor(Date.now() / 1000);
    return jwt(secret, { sub: 'u1', iat: now, exp: now + 3 });
  };
  const bot = new ParleyClient({ url: node.url, token, refreshBefore: 1000, ...fast });
  t.after(() => bot.close());
  const rec = record(bot);
  await bot.connect();
  assert.equal(bot.user, 'u1');
  await until('two refreshes', () => rec.auths >= 2);
  assert.equal(rec.drops, 0, 'the connection outlived its first tokens');
  await bot.say('lobby', 'still here');
  assert.ok(calls >= 3, `token() called ${calls} times`);
});

test('goes on on another node when its node is killed', async (t) => {
  const natsPort = await freePort();
  const tokenFile = join(mkdtempSync(join(tmpdir(), 'parley-js-')), 'nats.token');
  writeFileSync(tokenFile, 'a-token-for-this-test-only\n');
  const a = await parley(t, await freePort(), '--nats-embedded', `127.0.0.1:${natsPort}`, '--nats-token-file', tokenFile, '--node', 'a');
  const b = await parley(t, await freePort(), '--nats', `nats://127.0.0.1:${natsPort}`, '--nats-token-file', tokenFile, '--node', 'b');
  const obs = await observer(t, a.url);
  const bot = new ParleyClient({ url: [b.url, a.url], nick: 'bot', ...fast });
  t.after(() => bot.close());
  const rec = record(bot);
  await bot.connect();
  await bot.say('lobby', 'b1');
  await obs.say('o1');
  await b.stop('SIGKILL');
  await obs.say('o2');
  await bot.say('lobby', 'b2');
  await obs.say('o3');
  await until('the bot to see o3', () => rec.texts().includes('o3'));
  onceInOrder(rec.msgs);
  assert.deepEqual(rec.texts(), ['b1', 'o1', 'o2', 'b2', 'o3']);
});

test('a refused message rejects with its code', async (t) => {
  const node = await parley(t, await freePort(), '--max-text-length', '10');
  const bot = new ParleyClient({ url: node.url, ...fast });
  t.after(() => bot.close());
  await bot.connect();
  await assert.rejects(bot.say('lobby', 'far too long a message'), (e) => e instanceof ParleyError && e.code === Codes.TooLong);
  await assert.rejects(bot.join('bad room'), (e) => e instanceof ParleyError && e.code === Codes.BadRoom);
  assert.throws(() => new ParleyClient({ url: 'http://x/ws', WebSocket }), /want ws/);
});

test('paces under the server rate limit, and sends at once without one', async (t) => {
  for (const args of [['--rate-limit', '20', '--rate-burst', '5'], ['--rate-limit', 'off']]) {
    const node = await parley(t, await freePort(), ...args);
    const bot = new ParleyClient({ url: node.url, ...fast });
    t.after(() => bot.close());
    const rec = record(bot);
    const errors = [];
    bot.on('error', (e) => errors.push(e));
    await bot.connect();
    const texts = Array.from({ length: 30 }, (_, i) => `m${i}`);
    await Promise.all(texts.map((x) => bot.say('lobby', x)));
    await until('every message delivered', () => rec.msgs.length >= 30);
    onceInOrder(rec.msgs);
    assert.deepEqual([...rec.texts()].sort(), [...texts].sort(), args.join(' '));
    assert.deepEqual(errors, [], args.join(' '));
    // Paced, the server refused none of them (a retry would hide it).
    const metrics = await (await fetch(node.url.replace('ws://', 'http://').replace('/ws', '/metrics'))).text();
    assert.match(metrics, /parley_chat_errors_total\{code="rate_limited"\} 0\n/, args.join(' '));
  }
});
