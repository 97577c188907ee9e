// The browser node, end to end in headless Chromium: a native bin/hearth
// serves the web app; the page starts the node worker (hearth.wasm on
// OPFS, libp2p to the native node through its WebSocket listener), the
// service worker answers the page's /_matrix and /_hearth fetches with it,
// and the built-in app (matrix-js-sdk) registers a local user.
//
// Needs bin/hearth built with the current web app embedded (`make wasm web
// build`; `make test-js` does it) and /usr/bin/chromium (or $CHROMIUM).
// Figures are printed as "figure ..." lines.
//
// Run: make wasm web build && cd web && HEARTH_BIN=$PWD/../bin/hearth node --test --test-force-exit test/browser-node.test.mjs
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, mkdir, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { get } from 'node:http'
import { chromium } from 'playwright-core'
import { startHearth, waitFor, repoRoot, nodeRequest as nat, historyRoom } from '../testlib/hearth.mjs'

const launchArgs = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium'

function figure (name, value) {
  console.log(`figure ${name}: ${typeof value === 'string' ? value : JSON.stringify(value)}`)
}

const toClose = []
after(async () => {
  for (const c of toClose.reverse()) await c.close().catch(() => {})
})

// profileContext launches Chromium on a fresh profile directory, removed
// when t ends: a browser as people use it. (An incognito context keeps
// OPFS in memory behind IPC: each write costs ~20 ms there, against ~1 ms
// on a profile, and would swamp every figure the browser node gives.)
async function profileContext (t) {
  const profile = await mkdtemp(join(tmpdir(), 'hearth-profile-'))
  const context = await chromium.launchPersistentContext(profile, { executablePath, headless: true, args: launchArgs, serviceWorkers: 'allow' })
  toClose.push(context)
  t.after(async () => { await context.close().catch(() => {}); await rm(profile, { recursive: true, force: true }) })
  return context
}

// openApp opens the app in a persistent profile and waits until the node
// answers, the app has an account and the service worker controls the page.
async function openApp (context, url, { newTab = false } = {}) {
  const page = (!newTab && context.pages()[0]) || await context.newPage()
  const logs = []
  page.on('console', (m) => { logs.push(m.text()); if (process.env.HEARTH_TEST_LOG) console.log('[browser]', m.text()) })
  page.on('pageerror', (e) => logs.push('[page error] ' + e))
  page.logs = logs
  const t0 = Date.now()
  await page.goto(url)
  await waitForPage(page, 'the node to start', () => window.hearthBoot, 90_000)
  const nodeReady = Date.now() - t0
  await waitForPage(page, 'the app to sync', () => window.hearthApp && document.body.classList.contains('synced'), 30_000)
  await waitForPage(page, 'a service worker controller', () => !!navigator.serviceWorker.controller, 30_000)
  return { page, nodeReady }
}

async function waitForPage (page, what, fn, timeout = 30_000, arg) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout, polling: 50 })).jsonValue()
  } catch (e) {
    throw new Error(`waiting for ${what}: ${e.message}\nbrowser log:\n${(page.logs || []).slice(-40).join('\n')}`)
  }
}

// pageFetch fetches from the page (through the service worker).
function pageFetch (page, path, { method = 'GET', body, token } = {}) {
  return page.evaluate(async ([path, method, body, token]) => {
    const headers = { 'Content-Type': 'application/json' }
    if (token) headers.Authorization = 'Bearer ' + token
    const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined })
    return { status: r.status, json: await r.json() }
  }, [path, method, body, token])
}

const enc = encodeURIComponent

// bodiesNative lists the message bodies of a room on the native node.
async function bodiesNative (node, token, roomId) {
  const j = await nat(node, 'GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=100`, null, token)
  return j.chunk.filter((e) => e.type === 'm.room.message').map((e) => e.content.body)
}

// bodiesPage lists what the app's timeline shows for a room.
function bodiesPage (page, roomId) {
  return page.evaluate((roomId) => {
    const room = window.hearthApp.client.getRoom(roomId)
    return room ? room.getLiveTimeline().getEvents().filter((e) => e.getType() === 'm.room.message').map((e) => e.getContent().body) : []
  }, roomId)
}

function pct (xs, p) {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]
}

test('browser node: boots, answers through the service worker, federates with the native node, survives reload and service worker stops', { timeout: 600_000 }, async (t) => {
  // The real build's sizes (`make wasm` writes the .gz and .br).
  const wasm = join(repoRoot, 'web', 'app', 'hearth.wasm')
  const size = async (f) => {
    try {
      return +((await stat(f)).size / 2 ** 20).toFixed(2)
    } catch (e) {
      throw new Error(`${f}: ${e.code}: run \`make wasm web build\` first (bin/hearth embeds the web app)`)
    }
  }
  figure('hearth.wasm size (MiB)', { raw: await size(wasm), gzip: await size(wasm + '.gz'), brotli: await size(wasm + '.br') })

  const native = await startHearth(t)
  const nst = await nat(native, 'GET', '/_hearth/v1/status')
  // The native node serves the wasm pre-compressed to other machines
  // (cmd/hearth's tests check that), as is to this one: the browser's
  // HTTP cache would decode it on every page load, for nothing.
  const res = await new Promise((resolve, reject) => get(native.url + '/hearth.wasm', { headers: { 'Accept-Encoding': 'br, gzip' } }, resolve).on('error', reject))
  res.resume()
  assert.equal(res.statusCode, 200)
  assert.equal(res.headers['content-type'], 'application/wasm')
  assert.equal(res.headers['content-encoding'], undefined)
  const profile = await mkdtemp(join(tmpdir(), 'hearth-profile-'))
  t.after(() => rm(profile, { recursive: true, force: true }))
  const launch = () => chromium.launchPersistentContext(profile, { executablePath, headless: true, args: launchArgs, serviceWorkers: 'allow' })
  let context = await launch()
  toClose.push(context)

  // (a) boot, and answers through the service worker.
  let { page, nodeReady } = await openApp(context, native.url + '/')
  figure('page load → node answering (ms, cold)', nodeReady)
  const boot = await page.evaluate(() => window.hearthBoot)
  figure('browser node boot (ms since navigation; stage durations)', { ...boot.page_marks, ...boot.boot })
  figure('hearth.wasm as Chromium got it (bytes)', boot.wasm_bytes)
  assert.equal(boot.persistent, true, 'the node must run on OPFS in Chromium')
  const versions = await pageFetch(page, '/_matrix/client/versions')
  assert.equal(versions.status, 200)
  assert.ok(versions.json.versions.length > 0)
  const st = await pageFetch(page, '/_hearth/v1/status')
  assert.equal(st.status, 200)
  assert.match(st.json.server_name, /^k51/)
  assert.notEqual(st.json.server_name, nst.server_name, 'the page must be answered by the browser node, not the native one')
  assert.equal(st.json.server_name, boot.server_name)
  const browserName = boot.server_name
  const me = await page.evaluate(() => window.hearthApp.me)
  assert.ok(me.user_id.endsWith(':' + browserName), me.user_id)
  // The browser node reached the native node over libp2p, and holds a
  // relay reservation on it.
  await waitFor('the native node among the browser node\'s peers', async () =>
    (await pageFetch(page, '/_hearth/v1/status')).json.peers.some((p) => p.server_name === nst.server_name), { timeoutMs: 30_000 })
  await waitFor('a relay reservation', async () =>
    (await pageFetch(page, '/_hearth/v1/status')).json.addrs.some((a) => a.includes('/p2p-circuit')), { timeoutMs: 30_000 })

  // (b) a browser user and a native user chat over libp2p.
  const bob = await nat(native, 'POST', '/_matrix/client/v3/register', { username: 'bob', password: 'bob-secret-pw', auth: { type: 'm.login.dummy' } })
  const roomId = await page.evaluate(async () => {
    const { room_id: id } = await window.hearthApp.client.createRoom({ name: 'Browser and native', preset: 'private_chat' })
    return id
  })
  await page.evaluate(([roomId, bob]) => window.hearthApp.client.invite(roomId, bob), [roomId, bob.user_id])
  await waitFor('bob\'s invite on the native node', async () => {
    const s = await nat(native, 'GET', '/_matrix/client/v3/sync?timeout=0', null, bob.access_token)
    return s.rooms && s.rooms.invite && s.rooms.invite[roomId]
  }, { timeoutMs: 60_000, everyMs: 200 })
  await nat(native, 'POST', `/_matrix/client/v3/join/${enc(roomId)}?server_name=${enc(browserName)}`, {}, bob.access_token)
  await page.evaluate((roomId) => window.hearthApp.show(roomId), roomId)

  // browser → native, through the app's composer.
  await page.fill('#message', 'hello from the browser')
  await page.click('#send-btn')
  await waitFor('the browser\'s message on the native node', async () =>
    (await bodiesNative(native, bob.access_token, roomId)).includes('hello from the browser'), { timeoutMs: 60_000, everyMs: 100 })
  // native → browser.
  await nat(native, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/n1`, { msgtype: 'm.text', body: 'hello from the native node' }, bob.access_token)
  await waitFor('the native message in the app', async () => (await bodiesPage(page, roomId)).includes('hello from the native node'), { timeoutMs: 60_000, everyMs: 100 })
  await waitForPage(page, 'the message on screen', () => document.querySelector('#timeline').textContent.includes('hello from the native node'), 10_000)

  // Delivery latency, both ways (same clock: this machine).
  await page.evaluate((roomId) => {
    window.__seen = {}
    window.hearthApp.client.on('Room.timeline', (ev, room) => {
      if (room && room.roomId === roomId && ev.getType() === 'm.room.message') window.__seen[ev.getContent().body] ??= Date.now()
    })
  }, roomId)
  const toBrowser = []
  for (let i = 0; i < 20; i++) {
    const body = `n2b ${i}`
    const t0 = Date.now()
    await nat(native, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/lat${i}`, { msgtype: 'm.text', body }, bob.access_token)
    const seen = await waitForPage(page, body, (b) => window.__seen[b], 30_000, body)
    toBrowser.push(seen - t0)
  }
  let since = (await nat(native, 'GET', '/_matrix/client/v3/sync?timeout=0', null, bob.access_token)).next_batch
  const toNative = []
  for (let i = 0; i < 20; i++) {
    const body = `b2n ${i}`
    const t0 = await page.evaluate(([roomId, body]) => { const t = Date.now(); window.hearthApp.client.sendTextMessage(roomId, body); return t }, [roomId, body])
    for (;;) {
      const s = await nat(native, 'GET', `/_matrix/client/v3/sync?timeout=10000&since=${since}`, null, bob.access_token)
      since = s.next_batch
      const evs = s.rooms?.join?.[roomId]?.timeline?.events || []
      if (evs.some((e) => e.content?.body === body)) { toNative.push(Date.now() - t0); break }
    }
  }
  figure('delivery native → browser app (ms)', { p50: pct(toBrowser, 0.5), p90: pct(toBrowser, 0.9), max: Math.max(...toBrowser) })
  figure('delivery browser app → native /sync (ms)', { p50: pct(toNative, 0.5), p90: pct(toNative, 0.9), max: Math.max(...toNative) })

  // In-browser sends/s through the node's client API (16 in flight).
  const opfsBefore = (await pageFetch(page, '/_hearth/v1/status')).json.opfs
  const sends = await page.evaluate(async ([roomId, token]) => {
    const n = 300
    let next = 0
    const t0 = performance.now()
    const one = async () => {
      while (next < n) {
        const i = next++
        const r = await fetch(`/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/bench${i}`, {
          method: 'PUT', headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' }, body: JSON.stringify({ msgtype: 'm.text', body: `bench ${i}` })
        })
        if (!r.ok) throw new Error('send ' + r.status)
      }
    }
    await Promise.all(Array.from({ length: 16 }, one))
    return { n, per_s: n / (performance.now() - t0) * 1000 }
  }, [roomId, me.access_token])
  figure('in-browser sends through the service worker (ev/s, 16 in flight)', Math.round(sends.per_s))
  const opfsAfter = (await pageFetch(page, '/_hearth/v1/status')).json.opfs
  figure('OPFS work per sent event', {
    writes: +((opfsAfter.Writes - opfsBefore.Writes) / sends.n).toFixed(1),
    flushes: +((opfsAfter.Flushes - opfsBefore.Flushes) / sends.n).toFixed(2),
    sync_io_ms: +((opfsAfter.SyncIO - opfsBefore.SyncIO) / 1e6 / sends.n).toFixed(2),
    wall_ms: +(1000 / sends.per_s).toFixed(2)
  })

  // (d) the browser stops the service worker mid-session: requests keep
  // working (a new one asks the page for a port again) and the app keeps
  // syncing.
  // A /sync long poll is in flight through the service worker when it stops.
  await page.evaluate(async (token) => {
    const auth = { headers: { Authorization: 'Bearer ' + token } }
    const s = await (await fetch('/_matrix/client/v3/sync?timeout=0', auth)).json()
    window.__midSync = fetch('/_matrix/client/v3/sync?timeout=5000&since=' + s.next_batch, auth)
      .then(async (r) => ({ status: r.status, next: (await r.json()).next_batch }), (e) => ({ error: String(e) }))
  }, me.access_token)
  await new Promise((resolve) => setTimeout(resolve, 300))
  const cdp = await context.newCDPSession(page)
  await cdp.send('ServiceWorker.enable')
  await cdp.send('ServiceWorker.stopAllWorkers')
  const midSync = await page.evaluate(() => window.__midSync)
  assert.equal(midSync.status, 200, JSON.stringify(midSync))
  assert.ok(midSync.next)
  const whoami = await pageFetch(page, '/_matrix/client/v3/account/whoami', { token: me.access_token })
  assert.equal(whoami.status, 200)
  assert.equal(whoami.json.user_id, me.user_id)
  await nat(native, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/after-stop`, { msgtype: 'm.text', body: 'after the service worker stopped' }, bob.access_token)
  await waitFor('a message after the stop', async () => (await bodiesPage(page, roomId)).includes('after the service worker stopped'), { timeoutMs: 30_000, everyMs: 100 })
  for (let i = 0; i < 3; i++) {
    await cdp.send('ServiceWorker.stopAllWorkers')
    const r = await pageFetch(page, `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/sw${i}`, { method: 'PUT', token: me.access_token, body: { msgtype: 'm.text', body: `through a restarted service worker ${i}` } })
    assert.equal(r.status, 200, JSON.stringify(r.json))
  }
  await waitFor('messages sent through restarted service workers on the native node', async () =>
    (await bodiesNative(native, bob.access_token, roomId)).includes('through a restarted service worker 2'), { timeoutMs: 30_000, everyMs: 100 })

  // (e) screenshot.
  await mkdir(join(repoRoot, 'test-results'), { recursive: true })
  await page.screenshot({ path: join(repoRoot, 'test-results', 'browser-node.png') })

  // (c) reload: same server name, same account, history still there.
  // The service worker's scope is the app's page alone; a registration of
  // the whole origin (as earlier versions made, which took the node's
  // workers as clients too) is dropped on the next load.
  const scopes = () => page.evaluate(async () => (await navigator.serviceWorker.getRegistrations()).map((r) => new URL(r.scope).pathname).sort())
  assert.deepEqual(await scopes(), ['/app'])
  assert.equal(new URL(page.url()).pathname, '/app')
  await page.evaluate(() => navigator.serviceWorker.register('/sw.js', { scope: '/' }))
  assert.deepEqual(await scopes(), ['/', '/app'])
  await page.reload()
  await waitForPage(page, 'the node after reload', () => window.hearthBoot, 90_000)
  await waitForPage(page, 'the app after reload', () => window.hearthApp && document.body.classList.contains('synced'), 30_000)
  await waitForPage(page, 'the old registration to go', async () => (await navigator.serviceWorker.getRegistrations()).length === 1, 10_000)
  assert.deepEqual(await scopes(), ['/app'])
  assert.equal(await page.evaluate(() => window.hearthBoot.server_name), browserName)
  assert.equal(await page.evaluate(() => window.hearthApp.me.user_id), me.user_id)
  const hist = await pageFetch(page, `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=1000`, { token: me.access_token })
  const bodies = hist.json.chunk.filter((e) => e.type === 'm.room.message').map((e) => e.content.body)
  for (const b of ['hello from the browser', 'hello from the native node', 'bench 299', 'through a restarted service worker 2']) {
    assert.ok(bodies.includes(b), `history after reload lacks ${b}`)
  }

  // Browser restart with the same profile: still the same node.
  await context.close()
  context = await launch()
  toClose.push(context);
  ({ page, nodeReady } = await openApp(context, native.url + '/'))
  figure('page load → node answering (ms, warm profile after browser restart)', nodeReady)
  const warm = await page.evaluate(() => window.hearthBoot)
  figure('browser node boot after restart (ms since navigation; stage durations)', { ...warm.page_marks, ...warm.boot })
  assert.equal(await page.evaluate(() => window.hearthBoot.server_name), browserName)
  assert.equal(await page.evaluate(() => window.hearthApp.me.user_id), me.user_id)
  await page.evaluate((roomId) => window.hearthApp.show(roomId), roomId)
  await waitForPage(page, 'history on screen after restart', () => document.querySelector('#timeline').textContent.includes('through a restarted service worker 2'), 30_000)
  await page.screenshot({ path: join(repoRoot, 'test-results', 'browser-node-after-restart.png') })
  await stat(join(repoRoot, 'test-results', 'browser-node.png'))
})

test('a second tab uses the node running in the first, and takes it over when that tab closes', { timeout: 180_000 }, async (t) => {
  const native = await startHearth(t)
  const browser = await chromium.launch({ executablePath, headless: true, args: launchArgs })
  toClose.push(browser)
  const context = await browser.newContext({ serviceWorkers: 'allow' })
  const { page } = await openApp(context, native.url + '/')
  const name = await page.evaluate(() => window.hearthBoot.server_name)
  const user = await page.evaluate(() => window.hearthApp.me)
  const roomId = await page.evaluate(async () => (await window.hearthApp.client.createRoom({ name: 'two tabs' })).room_id)

  // The second tab's worker follows: its app runs against the first tab's node.
  const { page: second } = await openApp(context, native.url + '/', { newTab: true })
  assert.equal(await second.evaluate(() => window.hearthBoot.follower), true)
  assert.equal(await second.evaluate(() => window.hearthBoot.server_name), name)
  assert.equal(await second.evaluate(() => window.hearthApp.me.user_id), user.user_id)
  assert.match(await second.textContent('#banner'), /another tab/)
  const sent = await pageFetch(second, `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/t2`, { method: 'PUT', token: user.access_token, body: { msgtype: 'm.text', body: 'from the second tab' } })
  assert.equal(sent.status, 200, JSON.stringify(sent.json))
  await waitFor('the second tab\'s message in the first tab', async () => (await bodiesPage(page, roomId)).includes('from the second tab'), { timeoutMs: 30_000, everyMs: 100 })

  // Closing the first tab hands the node (same storage, same name) over.
  await page.close()
  await waitForPage(second, 'the node in the second tab', () => window.hearthNodeState && window.hearthNodeState.state === 'ready' && !window.hearthNodeState.status.follower, 90_000)
  assert.equal(await second.evaluate(() => window.hearthNodeState.status.server_name), name)
  const after = await pageFetch(second, `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=50`, { token: user.access_token })
  assert.equal(after.status, 200)
  assert.ok(after.json.chunk.some((e) => e.content?.body === 'from the second tab'))
})

test('two browser nodes chat with each other through the native relay', { timeout: 300_000 }, async (t) => {
  const native = await startHearth(t)
  // Two profiles: two origins' worth of storage, two homeservers.
  const { page: a } = await openApp(await profileContext(t), native.url + '/')
  const { page: b } = await openApp(await profileContext(t), native.url + '/')
  const [nameA, nameB] = [await a.evaluate(() => window.hearthBoot.server_name), await b.evaluate(() => window.hearthBoot.server_name)]
  assert.notEqual(nameA, nameB)
  for (const p of [a, b]) {
    await waitFor('a relay reservation', async () =>
      (await pageFetch(p, '/_hearth/v1/status')).json.addrs.some((x) => x.includes('/p2p-circuit')), { timeoutMs: 30_000 })
  }
  const userB = await b.evaluate(() => window.hearthApp.me.user_id)
  const roomId = await a.evaluate(async (userB) => {
    const { room_id: id } = await window.hearthApp.client.createRoom({ name: 'browser to browser', preset: 'private_chat' })
    await window.hearthApp.client.invite(id, userB)
    return id
  }, userB)
  await waitForPage(b, 'the invite in browser B', (id) => window.hearthApp.client.getRoom(id)?.getMyMembership() === 'invite', 60_000, roomId)
  await b.evaluate(async ([id, via]) => window.hearthApp.client.joinRoom(id, { viaServers: [via] }), [roomId, nameA])
  await waitForPage(a, 'B joined, seen by A', ([id, u]) => window.hearthApp.client.getRoom(id)?.getMember(u)?.membership === 'join', 60_000, [roomId, userB])

  // The two nodes talk over a relayed connection (browsers cannot dial each other).
  const peersA = (await pageFetch(a, '/_hearth/v1/status')).json.peers
  const viaB = peersA.find((p) => p.server_name === nameB)
  assert.ok(viaB && viaB.addrs.some((x) => x.includes('/p2p-circuit')), JSON.stringify(peersA))

  // Messages both ways; delivery latency from send to the other app's timeline.
  for (const p of [a, b]) {
    await p.evaluate((roomId) => {
      window.__seen = {}
      window.hearthApp.client.on('Room.timeline', (ev, room) => {
        if (room && room.roomId === roomId && ev.getType() === 'm.room.message') window.__seen[ev.getContent().body] ??= Date.now()
      })
    }, roomId)
  }
  // Three rounds of 20 each way: the first runs while Chromium is still
  // optimising the module's hot functions on the same two cores (a new
  // profile's first minute), the last once that has settled.
  const rounds = []
  for (let round = 0; round < 3; round++) {
    const lat = { ab: [], ba: [] }
    for (let i = 0; i < 20; i++) {
      for (const [from, to, key] of [[a, b, 'ab'], [b, a, 'ba']]) {
        const body = `${key} ${round}.${i}`
        const t0 = await from.evaluate(([roomId, body]) => { const t = Date.now(); window.hearthApp.client.sendTextMessage(roomId, body); return t }, [roomId, body])
        lat[key].push(await waitForPage(to, body, (b) => window.__seen[b], 30_000, body) - t0)
      }
    }
    rounds.push({ a_to_b: { p50: pct(lat.ab, 0.5), p90: pct(lat.ab, 0.9) }, b_to_a: { p50: pct(lat.ba, 0.5), p90: pct(lat.ba, 0.9) } })
  }
  figure('delivery browser → browser through the relay (ms)', { first: rounds[0], last: rounds[2] })
  await b.evaluate((roomId) => window.hearthApp.show(roomId), roomId)
  await b.screenshot({ path: join(repoRoot, 'test-results', 'browser-to-browser.png') })
})

test('closing the browser mid-send loses no acknowledged event', { timeout: 300_000 }, async (t) => {
  const native = await startHearth(t)
  const profile = await mkdtemp(join(tmpdir(), 'hearth-profile-'))
  t.after(() => rm(profile, { recursive: true, force: true }))
  const launch = () => chromium.launchPersistentContext(profile, { executablePath, headless: true, args: launchArgs, serviceWorkers: 'allow' })
  let context = await launch()
  toClose.push(context)
  let { page } = await openApp(context, native.url + '/')
  const me = await page.evaluate(() => window.hearthApp.me)
  const roomId = await page.evaluate(async () => (await window.hearthApp.client.createRoom({ name: 'durable' })).room_id)
  // Sends one after the other, four in flight, and tells this process of
  // every answered one; the browser closes while sends are in flight.
  const acked = new Set()
  await page.exposeFunction('hearthAck', (i) => acked.add(i))
  page.evaluate(async ([roomId, token]) => {
    let next = 0
    const one = async () => {
      for (;;) {
        const i = next++
        const r = await window.hearthNodeFetch(`/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/d${i}`, {
          method: 'PUT', headers: { Authorization: 'Bearer ' + token }, body: JSON.stringify({ msgtype: 'm.text', body: `durable ${i}` })
        })
        if (r.ok) await window.hearthAck(i)
      }
    }
    await Promise.all([one(), one(), one(), one()])
  }, [roomId, me.access_token]).catch(() => {})
  await waitFor('60 acknowledged sends', () => acked.size >= 60, { timeoutMs: 60_000 })
  await context.close()
  const before = new Set(acked)

  context = await launch()
  toClose.push(context);
  ({ page } = await openApp(context, native.url + '/'))
  assert.equal(await page.evaluate(() => window.hearthApp.me.user_id), me.user_id)
  const bodies = new Set()
  let from = ''
  for (;;) {
    const r = await pageFetch(page, `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=200${from}`, { token: me.access_token })
    assert.equal(r.status, 200, JSON.stringify(r.json))
    for (const e of r.json.chunk) if (e.type === 'm.room.message') bodies.add(e.content.body)
    if (!r.json.end || r.json.chunk.length === 0) break
    from = '&from=' + encodeURIComponent(r.json.end)
  }
  const lost = [...before].filter((i) => !bodies.has(`durable ${i}`))
  figure('closed mid-send', { acknowledged: before.size, stored: bodies.size, lost: lost.length })
  assert.deepEqual(lost, [], 'acknowledged events lost')
})

// aliceRoom has alice on the native node make a room of n messages (see
// historyRoom) and returns it, with the native node's name to join it
// through.
async function aliceRoom (native, name, n) {
  const alice = await nat(native, 'POST', '/_matrix/client/v3/register', { username: 'alice', password: 'alice-secret-pw', auth: { type: 'm.login.dummy' } })
  const roomId = await historyRoom(native, alice.access_token, name, n)
  return { roomId, via: (await nat(native, 'GET', '/_hearth/v1/status')).server_name }
}

// joinAndPageBack joins the app's user to the room through via and pages
// back with /messages (limit 100) until n messages were seen or history
// ends, as a client scrolling up does. It returns the message bodies seen
// and how long the join and the paging took.
async function joinAndPageBack (page, roomId, via, n) {
  const me = await page.evaluate(() => window.hearthApp.me)
  const t0 = Date.now()
  await page.evaluate(([roomId, via]) => window.hearthApp.client.joinRoom(roomId, { viaServers: [via] }), [roomId, via])
  const joinMs = Date.now() - t0
  const seen = new Set()
  let from = ''
  const t1 = Date.now()
  while (seen.size < n) {
    const r = await pageFetch(page, `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=100${from}`, { token: me.access_token })
    assert.equal(r.status, 200, JSON.stringify(r.json))
    for (const e of r.json.chunk) if (e.type === 'm.room.message') seen.add(e.content.body)
    if (!r.json.end || r.json.chunk.length === 0) break
    from = '&from=' + encodeURIComponent(r.json.end)
    assert.ok(Date.now() - t1 < 300_000, 'backfill too slow')
  }
  return { seen, joinMs, backfillMs: Date.now() - t1 }
}

test('the browser node backfills a 1,000-event room from the native node', { timeout: 400_000 }, async (t) => {
  const native = await startHearth(t)
  const N = 1000
  const { roomId, via } = await aliceRoom(native, 'long history', N)
  const { page } = await openApp(await profileContext(t), native.url + '/')
  const { seen, joinMs, backfillMs } = await joinAndPageBack(page, roomId, via, N)
  // The history's signatures were checked by the node's check workers
  // (wasm/checker.go), off the node's own thread.
  const { checks } = (await pageFetch(page, '/_hearth/v1/status')).json
  figure('browser join + backfill of 1,000 events', { join_ms: joinMs, backfill_ms: backfillMs, events: seen.size, checks })
  assert.equal(seen.size, N)
  assert.ok(checks.events > 0, `no events were checked by the check workers: ${JSON.stringify(checks)}`)
})

test('without its check workers the browser node checks history itself', { timeout: 300_000 }, async (t) => {
  const native = await startHearth(t)
  const N = 250
  const { roomId, via } = await aliceRoom(native, 'no helpers', N)
  const context = await profileContext(t)
  // The check workers' script fails to load: every worker the pool starts fails.
  await context.route('**/check-worker.js', (route) => route.fulfill({ status: 404, body: 'gone' }))
  const { page } = await openApp(context, native.url + '/')
  const { seen } = await joinAndPageBack(page, roomId, via, N)
  const { checks } = (await pageFetch(page, '/_hearth/v1/status')).json
  figure('backfill without check workers', { events: seen.size, checks })
  assert.equal(seen.size, N)
  assert.equal(checks.events, 0)
  assert.ok(checks.declined > 0, JSON.stringify(checks))
})
