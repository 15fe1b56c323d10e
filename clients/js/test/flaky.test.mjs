// Run by clients/js/js_test.go (TestNodeRetryOnce) against a server whose
// broker answers not_delivered to the first copy of each message and
// stores that copy 300 ms later anyway: the library says each message
// again with the same id, and the Go test then checks the room heard
// each once. Skipped without PARLEY_FLAKY_URL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { ParleyClient } from '../parley.js';

const url = process.env.PARLEY_FLAKY_URL;

test('says again after not_delivered, with the same id', { skip: !url && 'PARLEY_FLAKY_URL not set', timeout: 30000 }, async (t) => {
  const bot = new ParleyClient({ url, nick: 'flaky', minBackoff: 20, maxBackoff: 100, WebSocket });
  t.after(() => bot.close());
  const errors = [];
  bot.on('error', (e) => errors.push(e));
  await bot.connect();
  for (let i = 0; i < 5; i++) await bot.say('lobby', `b${i}`);
  assert.deepEqual(errors, [], 'no error reached the application: not_delivered was handled');
});
