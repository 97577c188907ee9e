// The page's side of the browser node: it starts the node worker, hands
// the service worker MessagePorts to it when asked, and gives the built-in
// app a fetch function that talks to the worker directly (the first load
// is not controlled by the service worker yet, and Shift-reload bypasses
// it: /_matrix must never reach the native node by mistake).

let worker
let seq = 0
const pending = new Map()
const listeners = new Set()
let state = { state: 'loading' }

function setState (s) {
  state = s
  for (const f of listeners) f(s)
}

/** onState calls f with every state change of the node worker (and now). */
export function onState (f) {
  listeners.add(f)
  f(state)
  return () => listeners.delete(f)
}

// since turns a status's boot marks (ms since the epoch, taken in the
// worker) into ms since this page's navigation started, with the page's
// own: the previous page unloaded, its HTML arrived, and the node worker
// was created (index.html).
function since (status) {
  if (!status || !status.marks) return status
  const t0 = performance.timeOrigin
  const page = Object.fromEntries(Object.entries(status.marks).map(([k, v]) => [k, Math.round(v - t0)]))
  const nav = performance.getEntriesByType('navigation')[0]
  if (nav && nav.unloadEventEnd) page.prev_unloaded = Math.round(nav.unloadEventEnd)
  if (nav) page.html = Math.round(nav.responseEnd)
  if (window.hearthWorkerCreated !== undefined) page.worker_created = Math.round(window.hearthWorkerCreated)
  return { ...status, page_marks: page }
}

/**
 * startNode starts the node worker (or adopts the one index.html started
 * before this bundle loaded) and registers the service worker.
 */
export function startNode () {
  worker = window.hearthWorker || new Worker('./node-worker.js')
  const early = window.hearthEarly || []
  window.hearthEarly = null
  const onMessage = (e) => {
    const m = e.data
    if (m.state) {
      const s = m.status ? { ...m, status: since(m.status) } : m
      // Kept for tests and the curious: what the node said when it first
      // answered (the app may only see it ready).
      if (s.state === 'answering') window.hearthAnswering = s.status
      setState(s)
      return
    }
    const w = pending.get(m.id)
    if (!w) return
    pending.delete(m.id)
    if (m.error) w.reject(new Error(m.error))
    else w.resolve(m)
  }
  worker.onmessage = onMessage
  for (const e of early) onMessage(e)
  // Leaving for good: stop the node now rather than when the browser gets
  // round to it, so that the next page's node (a reload) does not wait
  // behind this one. A commit is durable when it returns, so nothing
  // acknowledged is lost; a page kept for back/forward keeps its node.
  addEventListener('pagehide', (e) => { if (!e.persisted) worker.terminate() })
  worker.onerror = (e) => setState({ state: 'failed', error: 'worker error: ' + e.message })
  if ('serviceWorker' in navigator) {
    // The service worker asks for a port to the node worker whenever it
    // (re)starts without one.
    navigator.serviceWorker.addEventListener('message', (e) => {
      if (e.data && e.data.hearth === 'port-request') {
        const ch = new MessageChannel()
        worker.postMessage({ port: ch.port1 }, [ch.port1])
        e.ports[0].postMessage({ port: ch.port2 }, [ch.port2])
      }
    })
    navigator.serviceWorker.startMessages()
    // The scope is the app's page alone (/app), not the origin: the node's
    // workers, whose scripts are at the root, are then no clients of the
    // service worker, and their fetches (the wasm, the native node's
    // status) never wait for it to start. Earlier versions registered the
    // whole origin: that registration goes.
    navigator.serviceWorker.register('./sw.js', { scope: '/app' }).catch((err) => {
      console.warn('hearth: no service worker:', err)
    })
    navigator.serviceWorker.getRegistrations().then((regs) => {
      for (const r of regs) if (new URL(r.scope).pathname === '/') r.unregister()
    }, () => {})
  }
}

/** controlled resolves once the service worker controls this page. */
export function controlled () {
  if (!('serviceWorker' in navigator)) return Promise.reject(new Error('no service workers'))
  if (navigator.serviceWorker.controller) return Promise.resolve()
  return new Promise((resolve) => {
    navigator.serviceWorker.addEventListener('controllerchange', () => resolve(), { once: true })
  })
}

/** request sends one HTTP request to the node worker. */
export function request (method, url, headers = [], body = null) {
  const id = ++seq
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject })
    worker.postMessage({ id, method, url, headers, body }, body ? [body] : [])
  })
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/**
 * nodeFetch is a fetch() for matrix-js-sdk's fetchFn, answered by the node
 * worker. What the SDK sends (a URL string, a string body or none) goes
 * without a Request: reading a Request's body back takes the browser a
 * task or more, on every message sent.
 */
export async function nodeFetch (input, init = {}) {
  let method, url, headers, body
  if (typeof input === 'string' && (init.body == null || typeof init.body === 'string')) {
    method = (init.method || 'GET').toUpperCase()
    url = new URL(input, location.href).href
    const h = new Headers(init.headers)
    const hasBody = init.body != null && method !== 'GET' && method !== 'HEAD'
    // What fetch() would send for a string body.
    if (hasBody && !h.has('content-type')) h.set('content-type', 'text/plain;charset=UTF-8')
    headers = [...h]
    body = hasBody ? encoder.encode(init.body).buffer : null
  } else {
    const req = new Request(input, init)
    method = req.method
    url = req.url
    headers = [...req.headers]
    body = (method === 'GET' || method === 'HEAD') ? null : await req.arrayBuffer()
  }
  const signal = init.signal || (input instanceof Request ? input.signal : undefined)
  const call = request(method, url, headers, body)
  const answer = signal
    ? await Promise.race([call, new Promise((resolve, reject) => {
      if (signal.aborted) reject(new DOMException('aborted', 'AbortError'))
      signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')), { once: true })
    })])
    : await call
  const nullBody = answer.status === 204 || answer.status === 304
  return new NodeResponse(nullBody ? null : new Uint8Array(answer.body), { status: answer.status, headers: answer.headers })
}

/**
 * NodeResponse is a Response whose text() and json() resolve from the
 * bytes in hand, where a Response reads its body back in tasks of its
 * own: that wait is on every /sync answer, between the node and the app.
 */
class NodeResponse extends Response {
  #bytes
  #read = false
  constructor (bytes, init) {
    super(bytes, init)
    this.#bytes = bytes
  }

  text () {
    if (!this.#bytes || this.bodyUsed) return super.text()
    if (this.#read) return Promise.reject(new TypeError('body stream already read'))
    this.#read = true
    return Promise.resolve(decoder.decode(this.#bytes))
  }

  json () { return this.text().then(JSON.parse) }
}

/** status is the node's /_hearth/v1/status. */
export async function status () {
  const r = await nodeFetch(location.origin + '/_hearth/v1/status')
  return r.json()
}
