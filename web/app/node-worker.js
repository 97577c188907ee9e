// The node worker: a dedicated worker that runs the browser node
// (hearth.wasm, built from wasm/). It
//   1. takes the Web Lock 'hearth-node' (one node per browser profile).
//      While another tab's worker holds it, this one is a follower: it
//      forwards every request to the leader over the BroadcastChannel
//      'hearth-node' and takes over (same storage, same name) when the
//      leader's tab closes,
//   2. at once and all together: compiles hearth.wasm (streaming), opens
//      the database's OPFS files for the Go VFS (installing the native
//      node's empty schema on a first start), loads its identity seed from
//      OPFS (or makes one), and asks the native node that served the page
//      for its libp2p addresses (/_hearth/v1/status: this worker is no
//      client of the service worker, whose scope is the app's page),
//   3. starts the Go node in stages: it answers /_hearth/v1/status and
//      /_matrix/client/versions as soon as it has its identity
//      ('answering'), the whole client API once storage is open
//      ('ready'); libp2p connects after that, in the background.
//
// Protocol (from the page, and from service workers through MessagePorts
// the page hands over):
//   request  {id, method, url, headers: [[k, v]], body: ArrayBuffer|null}
//   answer   {id, status, headers: [[k, v]], body: ArrayBuffer} | {id, error}
// Page-only messages: {port} adds a MessagePort speaking the protocol;
// to the page: {state: 'waiting'|'starting'|'answering'|'ready'|'failed',
// status?, error?}; a follower's status carries follower: true. Statuses
// carry marks: when each boot step ended, in ms since the epoch (the page
// turns them into ms since its navigation).
'use strict'
importScripts('./wasm_exec.js')

const LOCK = 'hearth-node'
const SEED_FILE = 'hearth-identity.seed'
const marks = {}
const mark = (k) => { marks[k] = performance.timeOrigin + performance.now() }
mark('worker_start')

function tell (msg) { postMessage(msg) }

// holdLock resolves once this worker holds the lock, which it keeps until
// it ends (closed tab, reload): the callback's promise never settles.
function holdLock () {
  return new Promise((resolve, reject) => {
    let got = false
    navigator.locks.request(LOCK, { ifAvailable: true }, (lock) => {
      if (lock) {
        got = true
        lead()
        resolve()
        return new Promise(() => {})
      }
    }).then(() => {
      if (got) return
      follow()
      navigator.locks.request(LOCK, () => {
        lead()
        resolve()
        return new Promise(() => {})
      }).catch(reject)
    }, reject)
  })
}

function hex (bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

// loadSeed returns the node's 32-byte ed25519 seed, kept in OPFS (it is the
// node's identity and so its server name). Without OPFS the node is
// ephemeral anyway, and so is its seed.
async function loadSeed () {
  let dir
  try {
    dir = await navigator.storage.getDirectory()
  } catch (e) {
    return hex(crypto.getRandomValues(new Uint8Array(32)))
  }
  const fh = await dir.getFileHandle(SEED_FILE, { create: true })
  const have = new Uint8Array(await (await fh.getFile()).arrayBuffer())
  if (have.length === 32) return hex(have)
  const seed = crypto.getRandomValues(new Uint8Array(32))
  // A sync access handle flushes before we go on: the seed is durable
  // before the first event is signed with it.
  const h = await fh.createSyncAccessHandle()
  try {
    h.truncate(0)
    h.write(seed, { at: 0 })
    h.flush()
  } finally {
    h.close()
  }
  return hex(seed)
}

// nativePeers asks the native node that served the page for its WebSocket
// libp2p addresses: the browser node's bootstrap peer and relay.
async function nativePeers () {
  try {
    const r = await fetch('/_hearth/v1/status', { headers: { 'X-Hearth-Native': '1' }, cache: 'no-store' })
    if (!r.ok) throw new Error('HTTP ' + r.status)
    const st = await r.json()
    return (st.addrs || []).filter((a) => a.includes('/ws/') && !a.includes('/p2p-circuit'))
  } catch (e) {
    console.warn('hearth: no native node to bootstrap from:', e)
    return []
  }
}

// loadWasm compiles and instantiates hearth.wasm, and runs it until it has
// registered self.hearthNode. Compiling streams (it goes on while the
// bytes arrive) and needs the application/wasm type, which the native
// node serves. The wasm comes from the HTTP cache on later visits (the
// native node makes the browser revalidate it, a 304): compiled from
// there, the browser keeps the optimised code of the functions that ran
// hot (SQLite's, mostly) in its code cache and starts with it next time.
// (Cache Storage would hand over the bytes faster, but the module
// compiled from it gets no code cache: the node then starts twice as
// slowly.)
async function loadWasm () {
  const go = new Go()
  const response = fetch('./hearth.wasm').then((r) => { mark('wasm_response'); return r })
  const module = await WebAssembly.compileStreaming(response)
  checks.module = module
  mark('wasm_compiled')
  const instance = await WebAssembly.instantiate(module, go.importObject)
  mark('wasm_instantiated')
  const loaded = new Promise((resolve) => { self.hearthLoaded = resolve })
  go.run(instance).then(() => tell({ state: 'failed', error: 'the Go program exited' }))
  await loaded
  mark('go_loaded')
}

// Check workers (see wasm/checker.go): Go runs on this worker's one
// thread, so large batches of other servers' events (a page of history,
// a room's state on joining) are checked by a pool of workers running the
// same module, while this one goes on storing. The pool starts on first
// use, with one worker per core but this one's (at least one, at most
// four), and stops after a minute unused; until a worker is up, check
// answers null and the node checks the events itself.
const checks = { module: null, workers: [], seq: 0, idle: 0, failures: 0 }
const CHECKS_IDLE_MS = 60_000
const CHECKS_MAX_FAILURES = 3 // then the node checks everything itself

self.hearthChecks = {
  check (version, events) {
    const ready = startChecks().filter((w) => w.ready)
    if (!ready.length) return Promise.resolve(null)
    clearTimeout(checks.idle)
    checks.idle = setTimeout(stopChecks, CHECKS_IDLE_MS)
    const per = Math.ceil(events.length / ready.length)
    const parts = []
    for (let i = 0; i < events.length; i += per) parts.push(events.slice(i, i + per))
    return Promise.all(parts.map((part, k) => askCheck(ready[k], version, part))).then((rs) => rs.flat())
  }
}

function startChecks () {
  if (checks.workers.length || !checks.module || checks.failures >= CHECKS_MAX_FAILURES) return checks.workers
  clearTimeout(checks.idle)
  const n = Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 2) - 1))
  for (let i = 0; i < n; i++) {
    const w = { worker: new Worker('./check-worker.js'), ready: false, pending: new Map() }
    // A worker that fails leaves the pool (its checks fail, and the node
    // does them itself); the next check after it starts a new pool, up to
    // CHECKS_MAX_FAILURES times.
    const fail = (why) => {
      console.warn('hearth: check worker failed:', why)
      checks.failures++
      w.worker.terminate()
      checks.workers = checks.workers.filter((x) => x !== w)
      for (const [, p] of w.pending) p.reject(new Error('check worker: ' + why))
      w.pending.clear()
    }
    w.worker.onmessage = (e) => {
      const m = e.data
      if (m.ready) w.ready = true
      else if (m.failed) fail(m.failed)
      else {
        const p = w.pending.get(m.id)
        w.pending.delete(m.id)
        if (p) m.error ? p.reject(new Error(m.error)) : p.resolve(m.out)
      }
    }
    w.worker.onerror = (e) => { e.preventDefault(); fail(e.message || 'failed') }
    w.worker.postMessage({ module: checks.module })
    checks.workers.push(w)
  }
  return checks.workers
}

function askCheck (w, version, events) {
  return new Promise((resolve, reject) => {
    const id = ++checks.seq
    w.pending.set(id, { resolve, reject })
    w.worker.postMessage({ id, version, events }, events.map((e) => e.buffer))
  })
}

function stopChecks () {
  if (checks.workers.some((w) => w.pending.size)) {
    checks.idle = setTimeout(stopChecks, CHECKS_IDLE_MS)
    return
  }
  for (const w of checks.workers) w.worker.terminate()
  checks.workers = []
}

// openStorage opens the database's files in OPFS while the wasm compiles,
// and hands the sync access handles to the Go VFS (wasm/opfs/preopen.go):
// opening them is asynchronous, a trip through the browser's storage
// service each, which the node's start then does not wait for. On a first
// start it installs the native node's empty schema first (see
// installSchema). Without OPFS it does nothing: the node falls back to
// memory.
const DB_FILES = ['hearth.db', 'hearth.db-wal']
async function openStorage () {
  if (typeof FileSystemSyncAccessHandle === 'undefined') return
  let dir
  try {
    dir = await navigator.storage.getDirectory()
  } catch (e) {
    return
  }
  const exists = async (name) => !!(await dir.getFileHandle(name).catch(() => null))
  const [db, wal] = await Promise.all(DB_FILES.map(exists))
  if (!db && !wal) {
    await installSchema(dir).catch((e) => console.warn('hearth: no schema to start from, migrating:', e))
    mark('schema_installed')
  }
  const handles = {}
  await Promise.all(DB_FILES.map(async (name) => {
    const fh = await dir.getFileHandle(name, { create: true })
    handles['/' + name] = await fh.createSyncAccessHandle()
  }))
  self.hearthOPFSHandles = handles
}

// installSchema writes the native node's empty database (every migration
// applied, no rows) as this node's new database: its DDL is most of a
// first start's work under wasm, and it is the same SQLite and the same
// migrations. Written beside and then moved into place, so a tab killed
// meanwhile leaves no half database behind.
async function installSchema (dir) {
  const r = await fetch('/_hearth/v1/schema.db', { headers: { 'X-Hearth-Native': '1' } })
  if (!r.ok) throw new Error('HTTP ' + r.status)
  const bytes = new Uint8Array(await r.arrayBuffer())
  const magic = new TextDecoder().decode(bytes.subarray(0, 15))
  if (magic !== 'SQLite format 3' || bytes.length % 512 !== 0) throw new Error('not an SQLite database')
  const tmp = await dir.getFileHandle('hearth.db.new', { create: true })
  const h = await tmp.createSyncAccessHandle()
  try {
    h.truncate(0)
    h.write(bytes, { at: 0 })
    h.flush()
  } finally {
    h.close()
  }
  await tmp.move('hearth.db')
}

function withBoot (status) {
  // The download, if there was one (a HEAD has no body; a copy from
  // Cache Storage is no resource load).
  const res = performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/hearth.wasm'))
    .sort((a, b) => b.decodedBodySize - a.decodedBodySize)[0]
  return {
    ...status,
    marks: { ...marks },
    wasm_bytes: res ? { transferred: res.transferSize, encoded: res.encodedBodySize, decoded: res.decodedBodySize } : null
  }
}

// answering settles once the node answers status and versions (or failed).
let answered, notAnswering
const answering = new Promise((resolve, reject) => { answered = resolve; notAnswering = reject })
answering.catch(() => {})
const booted = boot()
async function boot () {
  await holdLock()
  mark('lock')
  tell({ state: 'starting' })
  const [seed, addrs] = await Promise.all([
    loadSeed().then((s) => { mark('seed'); return s }),
    nativePeers().then((a) => { mark('native_status'); return a }),
    loadWasm(),
    openStorage().then(() => mark('storage_opened'), (e) => console.warn('hearth: opening storage early:', e))
  ])
  const early = JSON.parse(await self.hearthNode.start(JSON.stringify({ seed, bootstrap: addrs, relays: addrs })))
  mark('answering')
  answered()
  tell({ state: 'answering', status: withBoot(early) })
  const st = JSON.parse(await self.hearthNode.ready())
  mark('ready')
  return withBoot({ ...st, native: addrs })
}
booted.then((st) => tell({ state: 'ready', status: st }), (e) => {
  notAnswering(e)
  tell({ state: 'failed', error: String((e && e.stack) || e) })
})

// Leader and followers. Requests on the channel: {kind: 'req', from, req};
// answers: {kind: 'res', to, res}.
const chan = new BroadcastChannel(LOCK)
const me = crypto.randomUUID()
let role = 'none' // 'follower' until we hold the lock, then 'leader'
let decide
const decided = new Promise((resolve) => { decide = resolve })
let pseq = 0
const proxied = new Map() // proxy id -> {to, id}

function lead () {
  role = 'leader'
  decide()
  // What followers asked and nobody answered (their leader went away
  // with it) fails now; the client retries against us.
  for (const [, p] of proxied) p.to.postMessage({ id: p.id, error: 'the node moved to this tab; retry' })
  proxied.clear()
}

function follow () {
  role = 'follower'
  decide()
  tell({ state: 'waiting' })
  // Ready as soon as the leader answers.
  const id = 'status'
  const st = { postMessage: (m) => {
    if (m.error || role !== 'follower') return
    const status = JSON.parse(new TextDecoder().decode(m.body))
    tell({ state: 'ready', status: { ...status, follower: true } })
  } }
  forward(st, { id, method: 'GET', url: self.location.origin + '/_hearth/v1/status', headers: [] })
}

function forward (to, m) {
  const pid = ++pseq
  proxied.set(pid, { to, id: m.id })
  chan.postMessage({ kind: 'req', from: me, req: { ...m, id: pid } })
}

chan.onmessage = (e) => {
  const m = e.data
  if (m.kind === 'req' && role === 'leader') {
    answer({ postMessage: (res) => chan.postMessage({ kind: 'res', to: m.from, res }) }, m.req)
  } else if (m.kind === 'res' && m.to === me) {
    const p = proxied.get(m.res.id)
    if (!p) return
    proxied.delete(m.res.id)
    const res = { ...m.res, id: p.id }
    p.to.postMessage(res, res.body ? [res.body] : [])
  }
}

// Requests go to Go in batches: see `requests` in wasm/main.go. While Go
// works, the browser queues the messages that arrive; the flush is a task
// posted behind them, so it hands over everything that arrived meanwhile
// in one call. A lone request waits one task hop (well under a ms).
const queue = []
const tick = new MessageChannel()
let flushing = false
tick.port1.onmessage = flush

function enqueue (to, m) {
  queue.push({ to, m })
  if (!flushing) {
    flushing = true
    tick.port2.postMessage(0)
  }
}

function flush () {
  flushing = false
  const batch = queue.splice(0)
  const calls = batch.map(({ m }) => [m.method, m.url, headerLines(m.headers), m.body ? new Uint8Array(m.body) : null])
  // Go calls reply the moment an answer is ready, from inside its run
  // (see `requests` in wasm/main.go): post it there and then.
  const reply = (i, r, err) => {
    const { to, m } = batch[i]
    if (!r) return to.postMessage({ id: m.id, error: String(err) })
    const buf = r.body.buffer
    to.postMessage({ id: m.id, status: r.status, headers: headerPairs(r.headers), body: buf }, [buf])
  }
  try {
    const wrong = self.hearthNode.requests(calls, reply)
    if (wrong) throw new Error(wrong)
  } catch (e) {
    batch.forEach((_, i) => reply(i, null, (e && e.message) || e))
  }
}

// Headers cross into Go as one string of "name: value" lines: each value
// taken from JS is a call across the boundary (see wasm/bridge.go).
function headerLines (pairs) {
  let s = ''
  for (const [k, v] of pairs || []) s += k + ': ' + v + '\n'
  return s
}

function headerPairs (lines) {
  const out = []
  for (const line of lines.split('\n')) {
    const i = line.indexOf(':')
    if (i > 0) out.push([line.slice(0, i), line.slice(i + 1).trim()])
  }
  return out
}

// answer serves one request message and posts the answer on `to`: with
// the node here, or through the leader while this worker follows.
async function answer (to, m) {
  await decided
  if (role === 'follower') return forward(to, m)
  try {
    // The node answers what it can as soon as it has its identity; the
    // rest waits inside it for storage.
    await answering
  } catch (e) {
    to.postMessage({ id: m.id, error: String((e && e.message) || e) })
    return
  }
  enqueue(to, m)
}

function servePort (port) {
  port.onmessage = (e) => answer(port, e.data)
  port.start()
}

self.onmessage = (e) => {
  const m = e.data
  if (m.port) servePort(m.port)
  else if (m.id !== undefined) answer(self, m)
}
