// The web app's live views, in headless Chromium against a native
// bin/hearth: progress shown while joining a room whose history comes
// from the native node, and the peers picture (this node in the middle,
// the native node reached directly and holding our relay reservation,
// another browser node reached through that relay). Screenshots go to
// test-results/ui-*.png: look at them when the UI changes.
//
// Run: make wasm web build && cd web && HEARTH_BIN=$PWD/../bin/hearth node --test --test-force-exit test/browser-ui.test.mjs
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { startHearth, waitFor, repoRoot, nodeRequest as nat } from '../testlib/hearth.mjs'

const launchArgs = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium'
const shots = join(repoRoot, 'test-results')

const toClose = []
after(async () => {
  for (const c of toClose.reverse()) await c.close().catch(() => {})
})

async function openApp (context, url) {
  const page = await context.newPage()
  page.logs = []
  page.on('console', (m) => { page.logs.push(m.text()); if (process.env.HEARTH_TEST_LOG) console.log('[browser]', m.text()) })
  page.on('pageerror', (e) => page.logs.push('[page error] ' + e))
  await page.goto(url)
  await waitForPage(page, 'the app to sync', () => window.hearthApp && document.body.classList.contains('synced'), 120_000)
  return page
}

async function waitForPage (page, what, fn, timeout = 30_000, arg) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout, polling: 50 })).jsonValue()
  } catch (e) {
    throw new Error(`waiting for ${what}: ${e.message}\nbrowser log:\n${(page.logs || []).slice(-40).join('\n')}`)
  }
}

const enc = encodeURIComponent

test('the app shows progress while joining and a live picture of its peers', { timeout: 600_000 }, async (t) => {
  await mkdir(shots, { recursive: true })
  const native = await startHearth(t)
  const nst = await nat(native, 'GET', '/_hearth/v1/status')
  // A room on the native node with a large state (the joining server
  // receives and checks all of it) and some history, for the browser to
  // join: slow enough to watch.
  const alice = await nat(native, 'POST', '/_matrix/client/v3/register', { username: 'alice', password: 'alice-secret-pw', auth: { type: 'm.login.dummy' } })
  const { room_id: roomId } = await nat(native, 'POST', '/_matrix/client/v3/createRoom', { name: 'Long history', preset: 'public_chat' }, alice.access_token)
  for (let i = 0; i < 400; i += 25) {
    await Promise.all(Array.from({ length: 25 }, (_, j) => nat(native, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/state/org.hearth.test.item/k${i + j}`, { n: i + j }, alice.access_token)))
  }
  for (let i = 0; i < 200; i += 25) {
    await Promise.all(Array.from({ length: 25 }, (_, j) => nat(native, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/h${i + j}`, { msgtype: 'm.text', body: `history ${i + j}` }, alice.access_token)))
  }

  const browser = await chromium.launch({ executablePath, headless: true, args: launchArgs })
  toClose.push(browser)
  const a = await openApp(await browser.newContext({ serviceWorkers: 'allow', viewport: { width: 1280, height: 760 } }), native.url + '/')

  // Joining through the app's form: the progress panel says what the node
  // fetches, and goes away when the room is there.
  await a.fill('#join-room', roomId)
  await a.fill('#join-via', nst.server_name)
  await a.click('#join button')
  await waitForPage(a, 'the progress panel', () => !document.querySelector('#progress').hidden, 30_000)
  assert.match(await a.textContent('#progress'), /Joining/)
  // A moment into the join, the panel names what is being fetched (or
  // the join is already over: fast machines).
  await waitForPage(a, 'the join under way', () => {
    const p = document.querySelector('#progress')
    return p.hidden || /asking to join|receiving the room|storing|busy|received in [1-9]/.test(p.textContent)
  }, 30_000)
  if (!await a.evaluate(() => document.querySelector('#progress').hidden)) {
    await a.screenshot({ path: join(shots, 'ui-joining.png') })
  }
  await waitForPage(a, 'the joined room on screen', (id) => window.hearthApp.current === id, 120_000, roomId)
  await waitForPage(a, 'the progress panel to go', () => document.querySelector('#progress').hidden, 30_000)
  // The app draws what the client took in once a frame.
  await waitForPage(a, 'the room\'s name as the title', () => /Long history/.test(document.querySelector('#room-title').textContent), 10_000)

  // Loading older history goes through the same panel.
  const shown = await a.evaluate(() => document.querySelectorAll('#timeline .msg').length)
  await a.click('#older')
  await waitForPage(a, 'older messages', (n) => document.querySelectorAll('#timeline .msg').length > n, 60_000, shown)

  // A second browser node joins a room of the first: the two reach each
  // other through the native node's relay.
  const b = await openApp(await browser.newContext({ serviceWorkers: 'allow' }), native.url + '/')
  const nameB = await b.evaluate(() => window.hearthBoot.server_name)
  const userB = await b.evaluate(() => window.hearthApp.me.user_id)
  for (const p of [a, b]) {
    await waitFor('a relay reservation', async () => (await p.evaluate(async () =>
      (await (await fetch('/_hearth/v1/status')).json()).addrs)).some((x) => x.includes('/p2p-circuit')), { timeoutMs: 60_000 })
  }
  const nameA = await a.evaluate(() => window.hearthBoot.server_name)
  const room2 = await a.evaluate(async (userB) => {
    const { room_id: id } = await window.hearthApp.client.createRoom({ name: 'Two browsers', preset: 'private_chat' })
    await window.hearthApp.client.invite(id, userB)
    return id
  }, userB)
  await waitForPage(b, 'the invite in browser B', (id) => window.hearthApp.client.getRoom(id)?.getMyMembership() === 'invite', 60_000, room2)
  await b.evaluate(([id, via]) => window.hearthApp.join(id, via), [room2, nameA])
  await a.evaluate((id) => window.hearthApp.show(id), room2)
  await a.evaluate((id) => window.hearthApp.client.sendTextMessage(id, 'hello, other browser'), room2)

  // The picture: the native node directly, holding our reservation; B
  // behind it, through the relay.
  await waitForPage(a, 'a relayed peer in the picture', () => Number(document.querySelector('#peer-map').dataset.relayed) >= 1, 60_000)
  const picture = await a.evaluate(() => {
    const svg = document.querySelector('#peer-map')
    return {
      direct: svg.querySelectorAll('line.link.direct').length,
      relayed: svg.querySelectorAll('line.link.relayed').length,
      native: svg.querySelectorAll('.peer-node.native').length,
      reservation: svg.querySelectorAll('.peer-node.reservation').length,
      me: svg.querySelectorAll('.peer-node.me').length,
      peers: [...svg.querySelectorAll('.peer-node[data-peer] title')].map((e) => e.textContent.split('\n')[0])
    }
  })
  assert.equal(picture.me, 1)
  assert.ok(picture.direct >= 1 && picture.native === 1 && picture.reservation === 1, JSON.stringify(picture))
  assert.ok(picture.relayed >= 1, JSON.stringify(picture))
  assert.ok(picture.peers.includes(nst.server_name) && picture.peers.includes(nameB), JSON.stringify(picture))
  assert.match(await a.textContent('#peers'), /via relay/)
  await new Promise((resolve) => setTimeout(resolve, 700)) // the fade-in
  await a.screenshot({ path: join(shots, 'ui-peers.png') })
})
