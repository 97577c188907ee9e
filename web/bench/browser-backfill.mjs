// Browser backfill benchmark: a native node holds rooms of N messages; a
// browser node (headless Chromium, fresh persistent profile) joins each
// and pages back through all of it with /messages (limit 100), as a
// client scrolling up does. Each room is timed from the first page to
// the last, with the CPU every process spent meanwhile (Chromium's by
// thread: "ThreadPoolForeg" is mostly V8 compiling hot wasm functions
// with its optimising compiler, "DedicatedWorker" the node and its check
// workers).
//
// The first room (2,000 messages) runs while Chromium is still optimising
// the module's hot functions (SQLite's, mostly): in a new profile that
// takes tens of seconds of CPU, on the node's cores. During the second
// room (N) it still compiles for 2-3 s of CPU (a trace shows
// wasm.TopTierCompilation); the third room (N again) is the node's steady
// speed. (A later visit starts from the browser's code cache, with much
// of it done: a trace of a reload shows v8.wasm.moduleCacheHit.)
//
// Run: make wasm web build && node web/bench/browser-backfill.mjs [N]
// (N defaults to 10000.)
import { chromium } from 'playwright-core'
import { mkdtemp, rm } from 'node:fs/promises'
import { readFileSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startHearth, repoRoot, nodeRequest as nat, historyRoom } from '../testlib/hearth.mjs'

const N = +(process.argv[2] || 10000)
const cleanups = []
const t = { after: (f) => cleanups.push(f) }

// cpu is the CPU time (ms) of every process by name, and of Chromium's
// threads by name, from /proc.
function cpu () {
  const out = { proc: {}, chromium: {} }
  const add = (o, k, stat) => {
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    o[k] = (o[k] || 0) + (+f[11] + +f[12]) * 10 // utime + stime, in 10 ms ticks
  }
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
      add(out.proc, comm.includes('chrom') ? 'chromium' : comm, readFileSync(`/proc/${pid}/stat`, 'utf8'))
      if (!comm.includes('chrom')) continue
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
        add(out.chromium, stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), stat)
      }
    } catch {} // the process ended meanwhile
  }
  return out
}

function since (a, b) {
  const d = (x, y) => Object.fromEntries(Object.entries(y).map(([k, v]) => [k, v - (x[k] || 0)]).filter(([, v]) => v >= 100))
  return { proc: d(a.proc, b.proc), chromium: d(a.chromium, b.chromium) }
}

async function ready (page) {
  await page.waitForFunction(() => window.hearthApp && document.body.classList.contains('synced'), null, { timeout: 90_000 })
  await page.waitForFunction(() => !!navigator.serviceWorker.controller, null, { timeout: 30_000 })
}

// backfill joins the room and pages back to its start.
async function backfill (page, roomId, via, n) {
  const me = await page.evaluate(() => window.hearthApp.me)
  const t0 = Date.now()
  await page.evaluate(([roomId, via]) => window.hearthApp.client.joinRoom(roomId, { viaServers: [via] }), [roomId, via])
  const joinMs = Date.now() - t0
  const c0 = cpu()
  const t1 = Date.now()
  // The client pages back inside the page, as an app scrolling up does:
  // no round trip to this script and no copy of each page to it.
  const got = await page.evaluate(async ([roomId, token]) => {
    const seen = new Set()
    let from = ''
    let pages = 0
    for (;;) {
      const x = await fetch(`/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=100${from}`, { headers: { Authorization: 'Bearer ' + token } })
      const json = await x.json()
      if (x.status !== 200) throw new Error(JSON.stringify(json))
      pages++
      for (const e of json.chunk) if (e.type === 'm.room.message') seen.add(e.content.body)
      if (!json.end || json.chunk.length === 0) return { messages: seen.size, pages }
      from = '&from=' + encodeURIComponent(json.end)
    }
  }, [roomId, me.access_token])
  const ms = Date.now() - t1
  if (got.messages !== n) throw new Error(`backfilled ${got.messages} of ${n} messages`)
  const status = (await page.evaluate(async () => (await fetch('/_hearth/v1/status')).json()))
  return { events: n, pages: got.pages, join_ms: joinMs, backfill_ms: ms, per_event_ms: +(ms / n).toFixed(2), checks: status.checks, cpu_ms: since(c0, cpu()) }
}

try {
  process.env.HEARTH_BIN ||= join(repoRoot, 'bin', 'hearth')
  const native = await startHearth(t)
  const alice = await nat(native, 'POST', '/_matrix/client/v3/register', { username: 'alice', password: 'alice-secret-pw', auth: { type: 'm.login.dummy' } })
  const first = await historyRoom(native, alice.access_token, '2000 messages', 2000)
  const second = await historyRoom(native, alice.access_token, `${N} messages`, N)
  const third = await historyRoom(native, alice.access_token, `${N} more messages`, N)
  const { server_name: via } = await nat(native, 'GET', '/_hearth/v1/status')

  const profile = await mkdtemp(join(tmpdir(), 'hearth-profile-'))
  cleanups.push(() => rm(profile, { recursive: true, force: true }))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update'],
    serviceWorkers: 'allow'
  })
  cleanups.push(() => context.close())
  const page = context.pages()[0] || await context.newPage()
  await page.goto(native.url + '/')
  await ready(page)
  console.log('first room, code being optimised:', JSON.stringify(await backfill(page, first, via, 2000)))
  console.log('second room, still compiling:', JSON.stringify(await backfill(page, second, via, N)))
  console.log('third room, steady:', JSON.stringify(await backfill(page, third, via, N)))
} finally {
  for (const f of cleanups.reverse()) await f().catch(() => {})
}
