// The node worker: a dedicated worker that runs the browser node
// (hearth.wasm, built from wasm/). It
//   1. takes the Web Lock 'hearth-node' (one node per browser profile).
//      While another tab's worker holds it, this one is a follower: it
//      forwards every request to the leader over the BroadcastChannel
//      'hearth-node' and takes over (same storage, same name) when the
//      leader's tab closes,
//   2. loads its identity seed from OPFS (or makes one),
//   3. asks the native node that served the page for its libp2p addresses
//      (/_hearth/v1/status; the service worker lets this worker's own
//      fetches through to the network),
//   4. starts the Go node, then answers requests.
//
// Protocol (from the page, and from service workers through MessagePorts
// the page hands over):
//   request  {id, method, url, headers: [[k, v]], body: ArrayBuffer|null}
//   answer   {id, status, headers: [[k, v]], body: ArrayBuffer} | {id, error}
// Page-only messages: {port} adds a MessagePort speaking the protocol;
// to the page: {state: 'waiting'|'starting'|'ready'|'failed', ...}; a
// follower's 'ready' status carries follower: true.
'use strict'
importScripts('./wasm_exec.js')

const LOCK = 'hearth-node'
const SEED_FILE = 'hearth-identity.seed'
const t0 = performance.now()

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
    return { seed: hex(crypto.getRandomValues(new Uint8Array(32))), persistent: false }
  }
  const fh = await dir.getFileHandle(SEED_FILE, { create: true })
  const have = new Uint8Array(await (await fh.getFile()).arrayBuffer())
  if (have.length === 32) return { seed: hex(have), persistent: true }
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
  return { seed: hex(seed), persistent: true }
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

async function boot () {
  await holdLock()
  const tLock = performance.now()
  tell({ state: 'starting' })
  const go = new Go()
  const [{ instance }, seed, addrs] = await Promise.all([
    WebAssembly.instantiateStreaming(fetch('./hearth.wasm'), go.importObject),
    loadSeed(),
    nativePeers()
  ])
  go.run(instance).then(() => tell({ state: 'failed', error: 'the Go program exited' }))
  while (!self.hearthNode) await new Promise((resolve) => setTimeout(resolve, 2))
  const tWasm = performance.now()
  const st = JSON.parse(await self.hearthNode.start(JSON.stringify({ seed: seed.seed, bootstrap: addrs, relays: addrs })))
  const res = performance.getEntriesByType('resource').find((e) => e.name.endsWith('/hearth.wasm'))
  return {
    ...st,
    lock_ms: tLock - t0,
    wasm_ms: tWasm - tLock,
    start_ms: performance.now() - tWasm,
    wasm_bytes: res ? { transferred: res.encodedBodySize, decoded: res.decodedBodySize } : null,
    native: addrs
  }
}

const booted = boot()
booted.then((st) => tell({ state: 'ready', status: st }),
  (e) => tell({ state: 'failed', error: String((e && e.stack) || e) }))

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

// answer serves one request message and posts the answer on `to`: with
// the node here, or through the leader while this worker follows.
async function answer (to, m) {
  await decided
  if (role === 'follower') return forward(to, m)
  try {
    await booted
    const body = m.body ? new Uint8Array(m.body) : null
    const r = await self.hearthNode.request(m.method, m.url, m.headers || [], body)
    const buf = r.body.buffer
    to.postMessage({ id: m.id, status: r.status, headers: r.headers, body: buf }, [buf])
  } catch (e) {
    to.postMessage({ id: m.id, error: String((e && e.message) || e) })
  }
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
