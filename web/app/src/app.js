// Hearth's built-in chat app: matrix-js-sdk against the browser node that
// runs in this page's node worker (see node.js). On first run it registers
// a local user and keeps the credentials in localStorage.
import { createClient, ClientEvent, RoomEvent, EventType, Direction } from 'matrix-js-sdk'
import { startNode, onState, nodeFetch, status, controlled } from './node.js'
import { draw as drawPeers, relayOf, shortName } from './peers.js'
import { withProgress } from './progress.js'

const $ = (sel) => document.querySelector(sel)
const CREDS = 'hearth.credentials'

let client = null
let me = null // {user_id, access_token, device_id, server_name}
let current = null // room ID on screen

function el (tag, props = {}, ...kids) {
  const e = document.createElement(tag)
  Object.assign(e, props)
  for (const k of kids) e.append(k)
  return e
}

function banner (text, cls = '') {
  const b = $('#banner')
  b.textContent = text
  b.className = cls
}

async function api (method, path, body, token) {
  const headers = { 'Content-Type': 'application/json' }
  if (token) headers.Authorization = 'Bearer ' + token
  const r = await nodeFetch(location.origin + path, { method, headers, body: body ? JSON.stringify(body) : undefined })
  const j = await r.json()
  if (!r.ok) throw new Error(`${path}: ${j.errcode || r.status} ${j.error || ''}`)
  return j
}

// account returns stored credentials for this node, or registers a user.
async function account (serverName) {
  const saved = JSON.parse(localStorage.getItem(CREDS) || 'null')
  if (saved && saved.server_name === serverName) {
    try {
      await api('GET', '/_matrix/client/v3/account/whoami', null, saved.access_token)
      return saved
    } catch (e) {
      console.warn('hearth: stored credentials no longer work:', e)
    }
  }
  const username = 'me' + Math.random().toString(36).slice(2, 8)
  const password = crypto.randomUUID()
  const reg = await api('POST', '/_matrix/client/v3/register', {
    username, password, auth: { type: 'm.login.dummy' }, initial_device_display_name: 'Hearth web app'
  })
  const creds = { user_id: reg.user_id, access_token: reg.access_token, device_id: reg.device_id, server_name: serverName }
  localStorage.setItem(CREDS, JSON.stringify(creds))
  return creds
}

// short shortens a Matrix ID's server name (a 62-character key) for display.
function short (id) {
  return (id || '').replace(/:(k51[a-z0-9]{6})[a-z0-9]+([a-z0-9]{4})$/, ':$1…$2')
}

function roomName (room) {
  return room.name || room.roomId
}

function renderRooms () {
  const list = $('#rooms')
  list.replaceChildren()
  const rooms = client.getRooms().filter((r) => ['join', 'invite'].includes(r.getMyMembership()))
  rooms.sort((a, b) => (b.getLastActiveTimestamp() || 0) - (a.getLastActiveTimestamp() || 0))
  for (const room of rooms) {
    const invite = room.getMyMembership() === 'invite'
    const li = el('li', { className: (room.roomId === current ? 'active ' : '') + (invite ? 'invite' : '') },
      el('span', { textContent: roomName(room) }))
    li.dataset.roomId = room.roomId
    if (invite) {
      const accept = el('button', { textContent: 'Accept', className: 'accept' })
      accept.onclick = async (e) => {
        e.stopPropagation()
        try {
          await join(room.roomId)
          show(room.roomId)
        } catch (err) {
          banner('Join failed: ' + err.message, 'warn')
        }
      }
      li.append(accept)
    }
    li.onclick = () => show(room.roomId)
    list.append(li)
  }
}

function renderTimeline () {
  const tl = $('#timeline')
  tl.replaceChildren()
  const room = current && client.getRoom(current)
  $('#room-title').textContent = room ? roomName(room) : 'No room selected'
  $('#room-id').textContent = room ? room.roomId : ''
  $('#composer').hidden = !room || room.getMyMembership() !== 'join'
  $('#room-tools').hidden = !room
  if (!room) return
  for (const ev of room.getLiveTimeline().getEvents()) {
    const type = ev.getType()
    let text
    if (type === EventType.RoomMessage) text = ev.getContent().body
    else if (type === EventType.RoomMember) text = `${short(ev.getStateKey())}: ${ev.getContent().membership}`
    else if (type === EventType.RoomCreate) text = 'created the room'
    else if (type === EventType.RoomName) text = `named the room “${ev.getContent().name}”`
    else continue
    const cls = type === EventType.RoomMessage ? 'msg' : 'state'
    tl.append(el('div', { className: cls + (ev.getSender() === me.user_id ? ' mine' : '') },
      el('span', { className: 'sender', textContent: short(ev.getSender()), title: ev.getSender() }),
      el('span', { className: 'body', textContent: text })))
  }
  tl.scrollTop = tl.scrollHeight
}

// The client tells of each event, room and name it takes in as it takes
// it, often dozens from one /sync, and before it sends a message on:
// redrawing there would rebuild the lists once for each, and hold up the
// send. They are redrawn once the page is idle instead (in a hidden tab,
// on a timer). Not at the next frame: a frame requested by a message's
// local echo ran its layout and paint before the message's request left
// the page about half the time, 1.5–5 ms on every such send.
const dirty = { rooms: false, timeline: false }
let drawQueued = false
function redraw (what) {
  dirty[what] = true
  if (drawQueued) return
  drawQueued = true
  const draw = () => {
    drawQueued = false
    if (dirty.rooms) renderRooms()
    if (dirty.timeline) renderTimeline()
    dirty.rooms = dirty.timeline = false
  }
  if (document.hidden) setTimeout(draw, 0)
  else if (window.requestIdleCallback) requestIdleCallback(draw, { timeout: 50 })
  else requestAnimationFrame(draw)
}

function show (roomId) {
  current = roomId
  renderRooms()
  renderTimeline()
}

let bootStatus = null // the node's status when it became ready (its native peers)

async function renderPeers () {
  try {
    const st = await status()
    const nodes = drawPeers($('#peer-map'), st, bootStatus?.native || [])
    const ul = $('#peers')
    ul.replaceChildren()
    const names = new Map(nodes.map((n) => [n.id, n.name]))
    for (const n of nodes) {
      let via = n.direct ? 'direct' : ''
      if (n.relays.length) via += (via ? ', and ' : '') + 'via relay ' + shortName(names.get(n.relays[0]) || n.relays[0])
      const role = [n.native ? 'native node' : '', n.reservation ? 'your relay' : ''].filter(Boolean).join(', ')
      ul.append(el('li', { title: n.addrs.join('\n') },
        el('code', { textContent: shortName(n.name) }),
        el('span', { className: 'via', textContent: ' ' + via + (role ? ' · ' + role : '') })))
    }
    if (!nodes.length) ul.append(el('li', { className: 'muted', textContent: 'no peers connected' }))
    const relays = [...new Set(st.addrs.map(relayOf).filter(Boolean))]
    $('#relays').textContent = st.p2p && st.p2p !== 'up' && st.p2p !== 'starting'
      ? 'libp2p is down: ' + st.p2p
      : relays.length ? 'others reach you through ' + relays.map((r) => shortName(names.get(r) || r)).join(', ') : 'no relay reservation yet'
  } catch (e) {
    console.warn('hearth: status', e)
  }
}

// join joins a room, showing what the node fetches meanwhile.
async function join (target, via) {
  return withProgress('Joining ' + (client.getRoom(target)?.name || target), () =>
    client.joinRoom(target, via ? { viaServers: [via] } : undefined))
}

function wire () {
  $('#composer').onsubmit = async (e) => {
    e.preventDefault()
    const input = $('#message')
    const body = input.value.trim()
    if (!body || !current) return
    input.value = ''
    await client.sendTextMessage(current, body)
  }
  $('#create').onsubmit = async (e) => {
    e.preventDefault()
    const name = $('#create-name').value.trim()
    const { room_id: roomId } = await client.createRoom({ name: name || undefined, preset: 'private_chat' })
    $('#create-name').value = ''
    await new Promise((resolve) => {
      if (client.getRoom(roomId)) return resolve()
      const on = (room) => { if (room.roomId === roomId) { client.off(ClientEvent.Room, on); resolve() } }
      client.on(ClientEvent.Room, on)
    })
    show(roomId)
  }
  $('#invite').onsubmit = async (e) => {
    e.preventDefault()
    const who = $('#invite-user').value.trim()
    if (!who || !current) return
    banner('Inviting ' + who + '…')
    try {
      await client.invite(current, who)
      banner('Invited ' + who, 'ok')
      $('#invite-user').value = ''
    } catch (err) {
      banner('Invite failed: ' + err.message, 'warn')
    }
  }
  $('#join').onsubmit = async (e) => {
    e.preventDefault()
    const target = $('#join-room').value.trim()
    const via = $('#join-via').value.trim()
    if (!target) return
    try {
      const room = await join(target, via)
      show(room.roomId)
    } catch (err) {
      banner('Join failed: ' + err.message, 'warn')
    }
  }
  $('#older').onclick = async () => {
    const room = current && client.getRoom(current)
    if (!room) return
    $('#older').disabled = true
    try {
      await withProgress('Loading older messages of ' + roomName(room), () => client.scrollback(room, 30))
    } finally {
      $('#older').disabled = false
    }
    renderTimeline()
  }
}

async function main () {
  startNode()
  onState((s) => {
    if (s.state === 'waiting') banner('This node runs in another tab: connecting to it…')
    else if (s.state === 'starting') banner('Starting your homeserver…')
    else if (s.state === 'answering') {
      $('#server-name').textContent = s.status.server_name
      banner('Your homeserver ' + s.status.server_name + ' is starting: opening its storage…')
    } else if (s.state === 'failed') banner('Your homeserver failed to start: ' + s.error, 'warn')
  })
  const ready = await new Promise((resolve) => onState((s) => { if (s.state === 'ready') resolve(s.status) }))
  window.hearthBoot = ready
  bootStatus = ready
  renderPeers()
  setInterval(renderPeers, 1500)
  $('#server-name').textContent = ready.server_name
  $('#persistence').textContent = ready.persistent ? '' : ' (not persistent: this browser has no OPFS; everything goes when the tab closes)'
  if (ready.follower) banner('Your homeserver ' + ready.server_name + ' runs in another tab; this tab uses it from there', 'ok')
  else banner('Your homeserver ' + ready.server_name + ' is running', 'ok')
  onState((s) => {
    window.hearthNodeState = s
    if (s.state === 'ready' && !s.status.follower && ready.follower) banner('Your homeserver ' + s.status.server_name + ' now runs in this tab', 'ok')
  })
  me = await account(ready.server_name)
  $('#user-id').textContent = me.user_id
  client = createClient({
    baseUrl: location.origin,
    userId: me.user_id,
    accessToken: me.access_token,
    deviceId: me.device_id,
    fetchFn: nodeFetch,
    timelineSupport: true
  })
  client.on(ClientEvent.Room, (room) => {
    redraw('rooms')
    if (room.roomId === current) redraw('timeline') // shown before the sync brought it
  })
  client.on(RoomEvent.MyMembership, () => redraw('rooms'))
  client.on(RoomEvent.Name, () => redraw('rooms'))
  client.on(RoomEvent.Timeline, (ev, room) => {
    if (room && room.roomId === current) redraw('timeline')
    redraw('rooms')
  })
  client.once(ClientEvent.Sync, () => {
    document.body.classList.add('synced')
    renderRooms()
  })
  wire()
  await client.startClient({ initialSyncLimit: 30, lazyLoadMembers: false })
  window.hearthNodeFetch = nodeFetch
  window.hearthApp = { client, me, show, join, get current () { return current }, controlled, Direction }
}

main().catch((e) => banner('Error: ' + e.message, 'warn'))
