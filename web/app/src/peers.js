// The peers view: a live picture of this node's libp2p connections, drawn
// in SVG from the node's /_hearth/v1/status. This node sits in the middle;
// peers it reaches directly sit on a ring around it, joined by solid
// lines; peers it reaches through a relay sit further out behind that
// relay, joined to it by dashed lines. The relay holding this node's
// reservation (how others reach it) wears a ring. A list under the picture
// says the same in words.

const SVG = 'http://www.w3.org/2000/svg'
const CX = 0
const CY = 0
const R1 = 80 // direct peers
const R2 = 165 // peers behind a relay
// The first direct peer up and to the left, its relayed peers beyond it:
// names (~70 units wide) on a diagonal do not run into each other.
const START = -2.4

const seen = new Set() // peer IDs drawn before: new ones fade in

function svg (tag, attrs = {}, ...kids) {
  const e = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  for (const k of kids) e.append(k)
  return e
}

function title (text) {
  return svg('title', {}, text)
}

// shortName shows a server name (a 62-character key) as its start and end.
export function shortName (name) {
  return name && name.length > 16 ? name.slice(0, 8) + '…' + name.slice(-4) : (name || '?')
}

// relayOf is the relay's peer ID in a relayed address
// (<relay addr>/p2p/<relay>/p2p-circuit[/p2p/<peer>]), or null.
export function relayOf (addr) {
  const i = addr.indexOf('/p2p-circuit')
  if (i < 0) return null
  return addr.slice(0, i).split('/p2p/').pop() || null
}

function peerIDOf (addr) {
  const parts = addr.split('/p2p/')
  return parts.length > 1 ? parts.pop() : null
}

// model turns a status into nodes and links. native: the native node's
// addresses (it served the page and is the bootstrap peer).
export function model (st, native = []) {
  const nativeIDs = new Set(native.map(peerIDOf).filter(Boolean))
  const reservations = new Set((st.addrs || []).map(relayOf).filter(Boolean))
  const nodes = new Map()
  for (const p of st.peers || []) {
    const relays = [...new Set(p.addrs.map(relayOf).filter(Boolean))]
    const direct = p.addrs.some((a) => !a.includes('/p2p-circuit'))
    nodes.set(p.peer_id, {
      id: p.peer_id,
      name: p.server_name || p.peer_id,
      addrs: p.addrs,
      direct,
      relays,
      native: nativeIDs.has(p.peer_id),
      reservation: reservations.has(p.peer_id)
    })
  }
  // A relay we reach others through is a peer of ours too; if the status
  // raced its connection, draw it anyway.
  for (const n of [...nodes.values()]) {
    for (const r of n.relays) {
      if (!nodes.has(r)) nodes.set(r, { id: r, name: r, addrs: [], direct: true, relays: [], native: nativeIDs.has(r), reservation: reservations.has(r) })
    }
  }
  return [...nodes.values()]
}

// layout places direct peers evenly on the inner ring and each relayed
// peer on the outer ring, fanned out around its relay's angle.
function layout (nodes) {
  const pos = new Map()
  const inner = nodes.filter((n) => n.direct).sort((a, b) => a.id.localeCompare(b.id))
  inner.forEach((n, i) => {
    const a = START + (2 * Math.PI * i) / Math.max(inner.length, 1)
    pos.set(n.id, { x: CX + R1 * Math.cos(a), y: CY + R1 * Math.sin(a), a })
  })
  const outer = nodes.filter((n) => !n.direct).sort((a, b) => a.id.localeCompare(b.id))
  const byRelay = new Map()
  for (const n of outer) {
    const r = n.relays[0]
    if (!byRelay.has(r)) byRelay.set(r, [])
    byRelay.get(r).push(n)
  }
  for (const [r, group] of byRelay) {
    const base = pos.get(r)?.a ?? START
    const spread = Math.min(0.45, 2.4 / Math.max(group.length, 1))
    group.forEach((n, i) => {
      const a = base + (i - (group.length - 1) / 2) * spread
      pos.set(n.id, { x: CX + R2 * Math.cos(a), y: CY + R2 * Math.sin(a), a })
    })
  }
  return pos
}

// role is the small print under a peer's name.
function role (n) {
  const tags = []
  if (n.native) tags.push('native')
  if (n.reservation) tags.push('your relay')
  else if (!n.native && n.direct) tags.push('direct')
  if (!n.direct) tags.push('via relay')
  return tags.join(' · ')
}

// draw renders the picture for a status into the <svg> element.
export function draw (el, st, native = []) {
  const nodes = model(st, native)
  const pos = layout(nodes)
  const links = svg('g', { class: 'links' })
  const dots = svg('g', { class: 'nodes' })
  for (const n of nodes) {
    const p = pos.get(n.id)
    if (n.direct) {
      links.append(svg('line', { x1: CX, y1: CY, x2: p.x, y2: p.y, class: 'link direct', 'data-peer': n.id }, title('direct connection')))
    }
    for (const r of n.relays) {
      const q = pos.get(r)
      if (!q) continue
      links.append(svg('line', { x1: q.x, y1: q.y, x2: p.x, y2: p.y, class: 'link relayed', 'data-peer': n.id }, title('through relay ' + shortName(nodes.find((m) => m.id === r)?.name || r))))
    }
    const cls = ['peer-node', n.native ? 'native' : '', n.reservation ? 'reservation' : '', n.direct ? 'direct' : 'relayed', seen.has(n.id) ? '' : 'new'].filter(Boolean).join(' ')
    const g = svg('g', { class: cls, transform: `translate(${p.x.toFixed(1)},${p.y.toFixed(1)})`, 'data-peer': n.id },
      title(`${n.name}\n${role(n)}\n${n.addrs.join('\n')}`))
    if (n.reservation) g.append(svg('circle', { r: 15, class: 'ring' }))
    g.append(svg('circle', { r: 10 }))
    g.append(svg('text', { y: 27, 'text-anchor': 'middle' }, shortName(n.name)))
    g.append(svg('text', { y: 38, 'text-anchor': 'middle', class: 'role' }, role(n)))
    dots.append(g)
  }
  for (const n of nodes) seen.add(n.id)
  const me = svg('g', { class: 'peer-node me', transform: `translate(${CX},${CY})` },
    title(`this node: ${st.server_name}`),
    svg('circle', { r: 17 }),
    svg('text', { y: 4, 'text-anchor': 'middle' }, 'you'),
    svg('text', { y: 33, 'text-anchor': 'middle', class: 'role' }, shortName(st.server_name)))
  const empty = nodes.length === 0
    ? [svg('text', { x: CX, y: CY + 50, 'text-anchor': 'middle', class: 'hint' }, st.p2p === 'up' || !st.p2p ? 'connecting to peers…' : 'libp2p: ' + st.p2p)]
    : []
  el.replaceChildren(links, dots, me, ...empty)
  // Fit the view to what is drawn (a name is about 70 units wide), at
  // least 200 wide so that a lone node is not drawn huge.
  const xs = [CX, ...[...pos.values()].map((p) => p.x)]
  const ys = [CY, ...[...pos.values()].map((p) => p.y)]
  let x0 = Math.min(...xs) - 45
  let x1 = Math.max(...xs) + 45
  if (x1 - x0 < 200) {
    const pad = (200 - (x1 - x0)) / 2
    x0 -= pad
    x1 += pad
  }
  const y0 = Math.min(...ys) - 22
  const y1 = Math.max(...ys) + (empty.length ? 60 : 44)
  el.setAttribute('viewBox', [x0, y0, x1 - x0, y1 - y0].map((v) => v.toFixed(1)).join(' '))
  el.dataset.peers = String(nodes.length)
  el.dataset.direct = String(nodes.filter((n) => n.direct).length)
  el.dataset.relayed = String(nodes.filter((n) => !n.direct).length)
  return nodes
}
