// The service worker: thin and stateless. It answers the page's fetches to
// /_matrix/* and /_hearth/* with the browser node (the node worker, see
// node-worker.js) instead of the native node that served the page.
//
// It cannot message a dedicated worker itself, so it asks the page that
// made the request for a MessagePort to the node worker (the page opens a
// MessageChannel to its worker and hands one end over). Ports are cached
// per page; when the browser stops this worker the cache is lost and the
// next request asks again. Everything else (the app's files) goes to the
// network untouched: where the browser has static routes, without this
// worker even being started for it. Its scope is the app's page (/app):
// the node's workers (scripts at the root) are no clients of it, so their
// fetches never wait for it to start.
'use strict'

const ports = new Map() // clientId -> Promise<MessagePort>
let seq = 0
const pending = new Map() // request id -> {resolve, reject}

self.addEventListener('install', (e) => {
  // Static routes: the browser sends everything but the node's paths
  // straight to the network, without starting this worker (page loads and
  // the app's files do not wait for it to boot). Where the browser lacks
  // them, the fetch handler below lets those requests through anyway.
  if (e.addRoutes && typeof URLPattern === 'function') {
    e.waitUntil(e.addRoutes([
      { condition: { urlPattern: new URLPattern({ pathname: '/_matrix/*' }) }, source: 'fetch-event' },
      { condition: { urlPattern: new URLPattern({ pathname: '/_hearth/*' }) }, source: 'fetch-event' },
      { condition: { urlPattern: new URLPattern({ pathname: '/*' }) }, source: 'network' }
    ]).catch((err) => console.warn('hearth: no static routes:', err)))
  }
  self.skipWaiting()
})
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()))

function isNodePath (url) {
  return url.origin === self.location.origin &&
    (url.pathname.startsWith('/_matrix/') || url.pathname.startsWith('/_hearth/'))
}

self.addEventListener('fetch', (event) => {
  const req = event.request
  const url = new URL(req.url)
  if (!isNodePath(url) || req.mode === 'navigate' || req.headers.has('X-Hearth-Native')) return
  event.respondWith(forward(event))
})

// portFor asks the page (a window client) for a port to its node worker.
function portFor (client) {
  let p = ports.get(client.id)
  if (p) return p
  p = new Promise((resolve, reject) => {
    const ch = new MessageChannel()
    const timer = setTimeout(() => reject(new Error('the page did not hand over a port')), 10000)
    ch.port1.onmessage = (e) => {
      clearTimeout(timer)
      const port = e.data.port
      port.onmessage = (m) => {
        const w = pending.get(m.data.id)
        if (!w) return
        pending.delete(m.data.id)
        if (m.data.error) w.reject(new Error(m.data.error))
        else w.resolve(m.data)
      }
      resolve(port)
    }
    client.postMessage({ hearth: 'port-request' }, [ch.port2])
  })
  p.catch(() => ports.delete(client.id))
  ports.set(client.id, p)
  return p
}

async function forward (event) {
  const req = event.request
  // A page we already have a port for needs no clients.get (a trip to the
  // browser process on every request).
  let port = ports.get(event.clientId)
  if (!port) {
    const client = event.clientId ? await self.clients.get(event.clientId) : null
    // Only pages are clients (see the scope above); anything else goes to
    // the network.
    if (!client || client.type !== 'window') return fetch(req)
    port = portFor(client)
  }
  try {
    const body = (req.method === 'GET' || req.method === 'HEAD') ? null : await req.arrayBuffer()
    port = await port
    const id = ++seq
    const answer = await new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject })
      port.postMessage({ id, method: req.method, url: req.url, headers: [...req.headers], body }, body ? [body] : [])
    })
    const nullBody = answer.status === 204 || answer.status === 304 || req.method === 'HEAD'
    return new Response(nullBody ? null : answer.body, { status: answer.status, headers: answer.headers })
  } catch (e) {
    ports.delete(event.clientId)
    const err = JSON.stringify({ errcode: 'M_UNKNOWN', error: 'the browser node did not answer: ' + e.message })
    return new Response(err, { status: 503, headers: { 'Content-Type': 'application/json' } })
  }
}
