// Helpers for JavaScript tests that need a real native node: build or find
// bin/hearth, start it on a fresh data dir and a free loopback port, and
// stop it. Kept outside web/test/ so node's test runner does not run it as
// a test file.
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

// matrix-js-sdk 43 and libp2p 3 declare Node >= 22 and call
// Promise.withResolvers (ES2024, Node 22). Fill it in on Node 20 so the
// unmodified libraries run there; a no-op on newer Node.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new this((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

let built;

/**
 * The hearth binary to test: $HEARTH_BIN when set (`make test` builds
 * bin/hearth and sets it), else a fresh `go build` of ./cmd/hearth into a
 * temp dir, once per test process.
 */
export function hearthBinary() {
  if (process.env.HEARTH_BIN) return Promise.resolve(process.env.HEARTH_BIN);
  built ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hearth-bin-'));
    const bin = join(dir, 'hearth');
    await promisify(execFile)('go', ['build', '-o', bin, './cmd/hearth'], { cwd: repoRoot, timeout: 300_000 });
    return bin;
  })();
  return built;
}

/**
 * Starts bin/hearth on a temp data dir and port 0, and resolves once it
 * logs its listening address. The node is stopped (and its data removed)
 * when the test `t` ends.
 */
export async function startHearth(t, { args = [], startTimeoutMs = 30_000 } = {}) {
  const bin = await hearthBinary();
  const data = await mkdtemp(join(tmpdir(), 'hearth-data-'));
  // Loopback only, no LAN discovery: tests never leave this machine.
  const proc = spawn(bin, ['--data', data, '--http', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0/ws', '--no-mdns', ...args], {
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  let log = '';
  const addr = await new Promise((resolveAddr, reject) => {
    const timer = setTimeout(() => reject(new Error(`hearth did not start within ${startTimeoutMs} ms:\n${log}`)), startTimeoutMs);
    proc.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`hearth exited early (code ${code}, signal ${sig}):\n${log}`));
    });
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      log += chunk;
      const m = /msg=listening .*\baddr=(\S+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolveAddr(m[1]);
      }
    });
  });
  const node = {
    url: `http://${addr}`,
    data,
    proc,
    /** Everything the node logged so far: print it when a test fails. */
    log: () => log,
    /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
    async stop(graceMs = 10_000) {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once('exit', (code, sig) => r({ code, sig })));
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
        node.exit = await exited;
        clearTimeout(timer);
      }
      await rm(data, { recursive: true, force: true });
    },
  };
  t.after(() => node.stop());
  return node;
}

/**
 * One client API call on a running node (as from startHearth): JSON in and
 * out, an access token if given; a non-2xx answer throws.
 */
export async function nodeRequest(node, method, path, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  const r = await fetch(node.url + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const json = await r.json();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

/**
 * Makes a public room of n messages ("history 0" …) on a running node as
 * the user of token, sending 25 at a time; resolves to its room ID.
 */
export async function historyRoom(node, token, name, n) {
  const { room_id: roomId } = await nodeRequest(node, 'POST', '/_matrix/client/v3/createRoom', { name, preset: 'public_chat' }, token);
  const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/h`;
  for (let i = 0; i < n; i += 25) {
    await Promise.all(Array.from({ length: Math.min(25, n - i) }, (_, j) =>
      nodeRequest(node, 'PUT', path + (i + j), { msgtype: 'm.text', body: `history ${i + j}` }, token)));
  }
  return roomId;
}

/** Polls `check` every `everyMs` until it returns a truthy value. */
export async function waitFor(what, check, { timeoutMs = 10_000, everyMs = 20 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
