// Progress for slow operations that fetch from other servers: joining a
// room (make_join, then send_join brings the room's state and history) and
// loading older history (backfill). While one runs, a panel shows what the
// node is fetching right now, from whom, how much has arrived and for how
// long, polled from the node's status (its federation activity).
import { status } from './node.js'
import { shortName } from './peers.js'

const PHASES = {
  make_join: 'asking to join',
  send_join: 'receiving the room',
  make_leave: 'asking to leave',
  send_leave: 'leaving',
  invite: 'sending the invite',
  backfill: 'fetching older history',
  get_missing_events: 'fetching missing events',
  state_ids: 'fetching the room state',
  state: 'fetching the room state',
  event: 'fetching an event',
  event_auth: 'fetching auth events',
  query: 'looking up',
  key: 'fetching keys',
  send: 'sending'
}

const ops = new Set() // {label, t0, base}
let last = null // the latest status: {federation, at}
let asking = 0 // when the status request in flight was sent (0: none)
let painter = null

function kib (n) {
  return n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + ' MiB' : Math.max(0, Math.round(n / 1024)) + ' KiB'
}

function totals (done) {
  let requests = 0
  let bytes = 0
  for (const [kind, t] of Object.entries(done || {})) {
    if (kind === 'send') continue // our own outgoing traffic
    requests += t.requests
    bytes += t.bytes
  }
  return { requests, bytes }
}

function el (tag, props = {}, ...kids) {
  const e = document.createElement(tag)
  Object.assign(e, props)
  for (const k of kids) e.append(k)
  return e
}

// refresh keeps `last` current, one status request at a time. The node
// answers between its own steps: while it checks and stores a room it has
// received (seconds of work for a big one) the answer waits, and the
// panel says the node is busy.
let refreshing = false
async function refresh () {
  if (refreshing) return
  refreshing = true
  while (ops.size) {
    asking = performance.now()
    try {
      const st = await status()
      last = { federation: st.federation || { active: [], done: {} }, at: performance.now() }
    } catch (e) {
      // Restarting or gone: keep what we knew.
    }
    asking = 0
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  refreshing = false
}

// paint draws the panel from what is known now; it runs every 100 ms while
// an operation runs, whether or not the node answers.
function paint () {
  const panel = document.querySelector('#progress')
  if (!ops.size) {
    panel.hidden = true
    clearInterval(painter)
    painter = null
    return
  }
  const fed = last?.federation || { active: [], done: {} }
  const now = totals(fed.done)
  const active = fed.active.filter((r) => r.kind !== 'send')
  const busy = asking && performance.now() - asking > 700
  const lines = []
  for (const op of ops) {
    const secs = ((performance.now() - op.t0) / 1000).toFixed(1)
    const got = { requests: now.requests - op.base.requests, bytes: now.bytes - op.base.bytes }
    for (const r of active) got.bytes += r.bytes
    let doing = 'working…'
    if (busy) doing = got.requests ? 'checking and storing what arrived (the node is busy)…' : 'the node is busy…'
    else if (active.length) doing = active.map((r) => `${PHASES[r.kind] || r.kind} from ${shortName(r.destination)} (${kib(r.bytes)}, ${(r.elapsed_ms / 1000).toFixed(1)} s)`).join('; ')
    else if (got.requests) doing = 'storing what arrived…'
    lines.push(el('div', { className: 'op' },
      el('strong', { textContent: op.label }),
      el('span', { className: 'muted', textContent: ` ${secs} s · ${kib(Math.max(0, got.bytes))} received in ${Math.max(0, got.requests)} request${got.requests === 1 ? '' : 's'}` }),
      el('div', { className: 'doing', textContent: doing })))
  }
  panel.querySelector('.ops').replaceChildren(...lines)
  panel.hidden = false
}

/**
 * withProgress runs op (a function returning a Promise) with a progress
 * line labelled label, shown until it settles; it returns op's result.
 */
export async function withProgress (label, op) {
  const entry = { label, t0: performance.now(), base: last ? totals(last.federation.done) : { requests: 0, bytes: 0 } }
  if (!last) {
    // What the node had fetched before: learnt meanwhile (counted from
    // zero if the node cannot say).
    status().then((st) => { entry.base = totals(st.federation?.done) }, () => {})
  }
  ops.add(entry)
  refresh()
  if (!painter) painter = setInterval(paint, 100)
  paint()
  try {
    return await op()
  } finally {
    ops.delete(entry)
    paint()
  }
}
