// The browser platform pieces, proven in headless Chromium: SQLite on the
// Origin Private File System (wasm/opfs) through node/storage in a
// dedicated worker — persistence across reloads, a worker killed mid-write
// and a browser restart — its insert rates, VerifyJSON and ed25519 rates,
// and the browser libp2p host (p2p/host over p2p/wsjs): it reserves a relay
// slot on a native node, and a second browser reaches it by server name
// through that relay with federation HTTP over a libp2p stream.
//
// It builds the probe wasm (wasm/probe) and cmd/p2p-node, serves
// web/test/browser-probe/ with the wasm and Go's wasm_exec.js on
// 127.0.0.1, and drives /usr/bin/chromium (or $CHROMIUM) with
// playwright-core. Figures are printed as "figure ..." lines.
//
// Run: cd web && node --test test/browser-probe.test.mjs
// (playwright-core from web/node_modules, or from the node_modules
// directory named by $HEARTH_NODE_MODULES.)
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { createServer } from 'node:http'
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname, extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { createRequire } from 'node:module'
import { gzipSync, brotliCompressSync, constants as zlibConstants } from 'node:zlib'

const here = dirname(fileURLToPath(import.meta.url))
const repo = join(here, '..', '..')
const pageDir = join(here, 'browser-probe')

async function loadPlaywright () {
  try {
    return await import('playwright-core')
  } catch (err) {
    if (!process.env.HEARTH_NODE_MODULES) throw err
    return createRequire(join(process.env.HEARTH_NODE_MODULES, 'noop.js'))('playwright-core')
  }
}
const { chromium } = await loadPlaywright()

const launchOptions = {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync']
}

let tmp, server, baseURL, native, nativeInfo
const started = [] // browsers and contexts to close

function figure (name, value) {
  console.log(`figure ${name}: ${typeof value === 'string' ? value : JSON.stringify(value)}`)
}

// within rejects if p takes longer than ms: every browser call is bounded.
function within (ms, what, p) {
  let timer
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms) })
  ])
}

const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' }

function serve (files) {
  const srv = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname
    const file = files[path === '/' ? '/index.html' : path]
    if (!file) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, {
      'Content-Type': types[extname(file)] || 'application/octet-stream',
      'Content-Length': statSync(file).size,
      'Cache-Control': 'no-store'
    })
    createReadStream(file).pipe(res)
  })
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)))
}

async function startNative (bin) {
  // --exit-on-eof: if this test process dies, the native node follows.
  native = spawn(bin, ['--listen', '/ip4/127.0.0.1/tcp/0/ws', '--relay-service', '--exit-on-eof'], {
    stdio: ['pipe', 'pipe', 'inherit']
  })
  const lines = createInterface({ input: native.stdout })
  return within(30_000, 'native node start', new Promise((resolve, reject) => {
    native.once('exit', (code) => reject(new Error(`native node exited with ${code}`)))
    lines.once('line', (line) => resolve(JSON.parse(line)))
  }))
}

// openProbe opens the probe page and waits for its worker (Web Lock + wasm).
async function openProbe (context) {
  const page = await context.newPage()
  page.on('console', (m) => { if (process.env.HEARTH_TEST_LOG) console.log('[browser]', m.text()) })
  page.on('pageerror', (e) => console.log('[page error]', e))
  await page.goto(baseURL)
  const boot = await within(60_000, 'worker boot', page.evaluate(() => probeReady()))
  return { page, boot }
}

function call (page, op, args = {}, ms = 120_000) {
  return within(ms, op, page.evaluate(([op, args]) => probe(op, args), [op, args]))
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// spamThenKill starts one-row-per-commit writes of ids from start on, waits
// until n are acknowledged, then runs kill, and returns the highest id
// acknowledged before the kill began.
async function spamThenKill (page, start, n, kill) {
  page.evaluate((start) => probe('storageSpam', { start, max: 100_000 }), start).catch(() => {})
  await within(60_000, 'acknowledged writes', (async () => {
    while (await page.evaluate(() => probeAcks()) < start + n - 1) await sleep(5)
  })())
  const acked = await page.evaluate(() => probeAcks())
  await kill()
  return acked
}

// checkAcked opens the database in a fresh worker and checks ids
// start..acked are all there and the database is intact.
async function checkAcked (page, start, acked, what) {
  await call(page, 'storageOpen')
  const check = await call(page, 'storageCheck', { from: start, to: acked })
  figure(what, { acknowledged: acked - start + 1, present: check.present, integrity: check.integrity })
  assert.equal(check.present, acked - start + 1, `${what}: an acknowledged write is missing`)
  assert.equal(check.integrity, 'ok', what)
}

// browserPID is the main process of the Chromium that Playwright started
// with this profile (the one without --type=).
function browserPID (profile) {
  const ps = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' })
  const line = ps.split('\n').find((l) => l.includes(`--user-data-dir=${profile}`) && !l.includes('--type='))
  assert.ok(line, `no Chromium process with profile ${profile}`)
  return Number(line.trim().split(/\s+/)[0])
}

// insertRates writes ids 0..2000, 10000..20000, 30000..30500 and
// 40000..42000 (14500 rows) four ways and returns the rates.
async function insertRates (page) {
  return {
    '100 rows per commit': await call(page, 'storageWrite', { start: 0, count: 2000, batch: 100 }),
    '10000 rows in one commit': await call(page, 'storageWrite', { start: 10_000, count: 10_000, batch: 10_000 }),
    'one commit per row (sequential)': await call(page, 'storageWrite', { start: 30_000, count: 500, batch: 1 }),
    '2000 concurrent one-row writes (group commit)': await call(page, 'storageBurst', { start: 40_000, count: 2000 })
  }
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'hearth-probe-'))
  const wasm = join(tmp, 'probe.wasm')
  const goroot = execFileSync('go', ['env', 'GOROOT'], { encoding: 'utf8' }).trim()
  const t0 = Date.now()
  execFileSync('go', ['build', '-trimpath', '-ldflags=-s -w', '-o', wasm, './wasm/probe'], {
    cwd: repo, env: { ...process.env, GOOS: 'js', GOARCH: 'wasm' }, stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000
  })
  figure('probe wasm build', `${((Date.now() - t0) / 1000).toFixed(1)} s`)
  const raw = readFileSync(wasm)
  figure('probe wasm size', {
    raw: raw.length,
    gzip9: gzipSync(raw, { level: 9 }).length,
    brotli5: brotliCompressSync(raw, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 5 } }).length
  })

  const bin = join(tmp, 'p2p-node')
  execFileSync('go', ['build', '-o', bin, './cmd/p2p-node'], { cwd: repo, stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 })
  nativeInfo = await startNative(bin)

  server = await serve({
    '/index.html': join(pageDir, 'index.html'),
    '/page.js': join(pageDir, 'page.js'),
    '/worker.js': join(pageDir, 'worker.js'),
    '/wasm_exec.js': join(goroot, 'lib', 'wasm', 'wasm_exec.js'),
    '/probe.wasm': wasm
  })
  baseURL = `http://127.0.0.1:${server.address().port}/`
}, { timeout: 900_000 })

after(async () => {
  for (const b of started.reverse()) await b.close().catch(() => {})
  if (native && native.exitCode === null) {
    const exited = new Promise((resolve) => native.once('exit', resolve))
    native.stdin.end()
    native.kill('SIGTERM')
    await exited
  }
  await new Promise((resolve) => server ? server.close(resolve) : resolve())
  if (tmp) rmSync(tmp, { recursive: true, force: true })
})

test('SQLite on OPFS: rows survive a reload, a killed worker, a crashed tab and a killed browser; one worker per origin; rates', { timeout: 600_000 }, async () => {
  const profile = join(tmp, 'profile')
  let context = await chromium.launchPersistentContext(profile, launchOptions)
  started.push(context)
  const first = await openProbe(context)
  let page = first.page
  figure('worker boot (Web Lock + wasm instantiate)', first.boot)

  const opened = await call(page, 'storageOpen')
  figure('storage open (first)', opened)
  assert.equal(opened.vfs, 'opfs')
  assert.equal(opened.persistent, true)
  assert.equal(opened.journal_mode, 'wal')
  assert.equal(opened.locking_mode, 'exclusive')
  assert.equal(opened.rows, 0)

  // (a) Insert rates, after a warm-up (the first SQLite calls pay for
  // compiling the wasm's functions). Ids never overlap.
  const cold = await call(page, 'storageWrite', { start: 200_000, count: 1000, batch: 100 })
  figure('OPFS inserts, cold (first 1000 rows, 100 per commit)', cold)
  const rates = await insertRates(page)
  for (const [what, r] of Object.entries(rates)) figure(`OPFS inserts, ${what}`, r)
  const total = 1000 + 14_500

  // (b) Reload: the page's worker goes away without closing the database
  // (nothing is closed cleanly), a new worker takes the lock and reads.
  await page.reload()
  figure('worker boot after reload', await within(60_000, 'worker boot after reload', page.evaluate(() => probeReady())))
  const reopened = await call(page, 'storageOpen')
  figure('storage open (after reload)', reopened)
  let check = await call(page, 'storageCheck', { from: 0, to: 1_000_000 })
  figure('check after reload', check)
  assert.deepEqual([check.rows, check.present, check.integrity], [total, total, 'ok'])

  // Writers killed mid-write, three ways: every write acknowledged before
  // the kill is there afterwards, and the database is intact.
  let acked = await spamThenKill(page, 100_000, 300, () => page.evaluate(() => probeKill()))
  await within(60_000, 'worker restart', page.evaluate(() => probeRestart()))
  await checkAcked(page, 100_000, acked, 'worker terminated mid-write')

  const cdp = await context.newCDPSession(page)
  const crashed = new Promise((resolve) => page.once('crash', resolve))
  acked = await spamThenKill(page, 300_000, 300, async () => {
    cdp.send('Page.crash').catch(() => {}) // answers never come: the renderer is gone
    await within(30_000, 'renderer crash', crashed)
  });
  ({ page } = await openProbe(context))
  await checkAcked(page, 300_000, acked, 'renderer (tab) crashed mid-write')

  const closed = new Promise((resolve) => context.once('close', resolve))
  acked = await spamThenKill(page, 400_000, 300, async () => {
    process.kill(browserPID(profile), 'SIGKILL')
    await within(30_000, 'browser exit', closed)
  })
  context = await chromium.launchPersistentContext(profile, launchOptions)
  started.push(context);
  ({ page } = await openProbe(context))
  await checkAcked(page, 400_000, acked, 'browser killed (SIGKILL) mid-write')

  // A clean close checkpoints and deletes the -wal file; reopening finds
  // everything in the database file alone.
  const before = await call(page, 'storageCheck', { from: 0, to: 1_000_000 })
  await call(page, 'storageClose')
  const files = await call(page, 'opfsList')
  assert.deepEqual(files.map((f) => f.name), ['probe.db'])
  await call(page, 'storageOpen')
  const after = await call(page, 'storageCheck', { from: 0, to: 1_000_000 })
  figure('after a clean close', { files, rows: after.rows, integrity: after.integrity })
  assert.deepEqual([after.rows, after.present, after.integrity], [before.rows, before.rows, 'ok'])

  // A second tab's worker waits for the Web Lock: it gets the database
  // only once the first tab is gone.
  const second = await context.newPage()
  await second.goto(baseURL)
  const early = await Promise.race([second.evaluate(() => probeReady()).then(() => 'ready'), sleep(1500).then(() => 'waiting')])
  assert.equal(early, 'waiting', 'a second worker started while the first held the lock')
  await page.close()
  await within(30_000, 'second worker boot', second.evaluate(() => probeReady()))
  await call(second, 'storageOpen')
  const inSecond = await call(second, 'storageCheck', { from: 0, to: 1_000_000 })
  assert.equal(inSecond.rows, before.rows)
  await call(second, 'storageClose')
  await context.close()
})

test('SQLite on OPFS without exclusive mode: several connections, rollback journal', { timeout: 300_000 }, async () => {
  // Not how the node runs (it is exclusive, WAL), but the VFS must not
  // break here: one handle shared by the writer and four readers with
  // SQLite's locks kept in memory, and -journal files created and deleted
  // through the asynchronous OPFS calls. (An incognito-like context, whose
  // OPFS lives in memory behind IPC: slower.)
  const browser = await chromium.launch(launchOptions)
  started.push(browser)
  const { page } = await openProbe(await browser.newContext())
  const opened = await call(page, 'storageOpen', { path: '/shared.db', shared: true })
  assert.equal(opened.vfs, 'opfs')
  assert.equal(opened.journal_mode, 'delete')
  assert.equal(opened.locking_mode, 'normal')
  const [w, burst, reads] = await Promise.all([
    call(page, 'storageWrite', { start: 0, count: 300, batch: 10 }),
    call(page, 'storageBurst', { start: 1000, count: 200 }),
    Promise.all(Array.from({ length: 8 }, () => call(page, 'storageCheck', { from: 0, to: 2000 })))
  ])
  figure('OPFS shared mode (incognito): 10 rows per commit', w)
  figure('OPFS shared mode (incognito): 200 concurrent one-row writes', burst)
  for (const r of reads) assert.equal(r.integrity, 'ok')
  const check = await call(page, 'storageCheck', { from: 0, to: 2000 })
  assert.deepEqual([check.rows, check.present, check.integrity], [500, 500, 'ok'])
  await call(page, 'storageClose')
  const files = await call(page, 'opfsList')
  assert.deepEqual(files.map((f) => f.name), ['shared.db'], 'a journal was left behind')
  await browser.close()
})

test('CPU in the worker: SQLite on memdb, VerifyJSON, ed25519, WebCrypto Ed25519', { timeout: 300_000 }, async () => {
  const browser = await chromium.launch(launchOptions)
  started.push(browser)
  const context = await browser.newContext()
  const { page } = await openProbe(context)
  // The same inserts on the memdb fallback: what SQLite costs in wasm
  // without any file I/O, to compare OPFS with.
  const opened = await call(page, 'storageOpen', { vfs: 'memdb' })
  assert.equal(opened.persistent, false)
  figure('memdb open', opened)
  figure('memdb inserts, cold (first 1000 rows, 100 per commit)', await call(page, 'storageWrite', { start: 200_000, count: 1000, batch: 100 }))
  for (const [what, r] of Object.entries(await insertRates(page))) figure(`memdb inserts, ${what}`, r)
  await call(page, 'storageClose')

  const go = await call(page, 'verifyBench', { n: 1000 })
  figure('Go verify in worker', go)
  assert.ok(go.verify_json_per_s > 0)
  const wc = await call(page, 'webcryptoBench', { n: 2000 })
  figure('WebCrypto Ed25519 verify in worker', wc)
  await browser.close()
})

test('libp2p in the browser: relay reservation, browser→native and browser→browser by server name', { timeout: 300_000 }, async () => {
  const relay = nativeInfo.addrs.find((a) => a.includes('/ws/'))
  assert.ok(relay, `native node has no WebSocket address: ${nativeInfo.addrs}`)
  const browser = await chromium.launch(launchOptions)
  started.push(browser)
  // Two contexts: two origins' worth of storage, two nodes.
  const a = await openProbe(await browser.newContext())
  const b = await openProbe(await browser.newContext())

  const hostA = await call(a.page, 'p2pStart', { relays: [relay], wait_ms: 30_000 })
  // B dials the relay by DNS name: the browser resolves it.
  const relayByName = relay.replace(/^\/ip4\/127\.0\.0\.1\//, '/dns4/localhost/')
  assert.notEqual(relayByName, relay)
  const hostB = await call(b.page, 'p2pStart', { relays: [relayByName], wait_ms: 30_000 })
  figure('browser host A (reserved)', { reserved_ms: hostA.reserved_ms, addrs: hostA.addrs })
  figure('browser host B (reserved)', { reserved_ms: hostB.reserved_ms })
  assert.notEqual(hostA.server_name, hostB.server_name)
  for (const addr of hostA.addrs) {
    assert.match(addr, new RegExp(`/p2p/${nativeInfo.peer_id}/p2p-circuit/p2p/${hostA.peer_id}$`))
  }

  const toNative = await call(a.page, 'p2pGet', { name: nativeInfo.server_name, n: 200 })
  figure('browser→native federation GET', toNative)
  assert.equal(toNative.server, 'hearth-p2p-node')
  assert.equal(toNative.remote_server_name, hostA.server_name)

  const toBrowser = await call(b.page, 'p2pGet', { name: hostA.server_name, n: 200 })
  figure('browser→browser federation GET via the relay', toBrowser)
  assert.equal(toBrowser.server, 'hearth-probe')
  assert.equal(toBrowser.remote_server_name, hostB.server_name)
  assert.ok(toBrowser.via.length > 0 && toBrowser.via.every((v) => v.includes('/p2p-circuit')),
    `B reached A at ${toBrowser.via}, not through the relay`)

  const peers = await call(a.page, 'p2pPeers')
  assert.ok(peers.peers.some((p) => p.server_name === nativeInfo.server_name), 'A does not list the relay')
  assert.ok(peers.peers.some((p) => p.server_name === hostB.server_name), 'A does not list B')
  await browser.close()
})
