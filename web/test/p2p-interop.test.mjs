// Interop: a js-libp2p node (WebSockets, noise, yamux — what a browser
// speaks) connects to a native Hearth libp2p host, completes identify and
// ping, and sends a federation HTTP request over a stream, which the Go side
// attributes to the js node's authenticated peer ID.
//
// The native side is cmd/p2p-node, built here with `go build` (or taken
// from $HEARTH_P2P_NODE). Run: cd web && node --test test/p2p-interop.test.mjs
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { once } from 'node:events'

import { createLibp2p } from 'libp2p'
import { webSockets } from '@libp2p/websockets'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { multiaddr } from '@multiformats/multiaddr'

// libp2p 3 declares Node >= 22 and uses Promise.withResolvers (Node 22);
// this fills it in on Node 20, before any libp2p code runs.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
let tmp, native, info, node

if (typeof globalThis.WebSocket === 'function') {
  defineTests()
} else {
  // Node 20 has a global WebSocket only with --experimental-websocket, and
  // @libp2p/websockets dials with the global one. (Filling it in with the
  // `ws` package is not enough: ws can emit the server's first message
  // before libp2p listens for it, and noise negotiation then fails now and
  // then.) Run this file again with the flag and report its result.
  test('p2p interop (run with --experimental-websocket)', { timeout: 180_000 }, async () => {
    // Without NODE_TEST_CONTEXT, which `node --test` sets for the files it
    // runs: with it, the child would report to us in the runner's internal
    // format and exit 0 whatever happened.
    const env = { ...process.env }
    delete env.NODE_TEST_CONTEXT
    const child = spawn(process.execPath, ['--experimental-websocket', '--test', fileURLToPath(import.meta.url)], {
      stdio: ['ignore', 'pipe', 'pipe'], env
    })
    let out = ''
    child.stdout.on('data', (d) => { out += d })
    child.stderr.on('data', (d) => { out += d })
    const [code] = await once(child, 'exit')
    assert.equal(code, 0, out)
  })
}

function defineTests () {
  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'hearth-interop-'))
    let bin = process.env.HEARTH_P2P_NODE
    if (!bin) {
      bin = join(tmp, 'p2p-node')
      execFileSync('go', ['build', '-o', bin, './cmd/p2p-node'], { cwd: repo, stdio: ['ignore', 'ignore', 'inherit'] })
    }
    // --exit-on-eof: if this test process dies, the native node follows.
    native = spawn(bin, ['--listen', '/ip4/127.0.0.1/tcp/0/ws', '--exit-on-eof'], {
      stdio: ['pipe', 'pipe', 'inherit']
    })
    const lines = createInterface({ input: native.stdout })
    info = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('native node did not start in 30 s')), 30_000)
      native.once('exit', (code) => { clearTimeout(timer); reject(new Error(`native node exited with ${code}`)) })
      lines.once('line', (line) => { clearTimeout(timer); resolve(JSON.parse(line)) })
    })
    node = await createLibp2p({
      transports: [webSockets()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { identify: identify(), ping: ping() }
    })
  }, { timeout: 120_000 })

  after(async () => {
    await node?.stop()
    if (native && native.exitCode === null) {
      const exited = new Promise((resolve) => native.once('exit', resolve))
      native.stdin.end()
      native.kill('SIGTERM')
      await exited
    }
    if (tmp) rmSync(tmp, { recursive: true, force: true })
  })

  function wsAddr () {
    const addr = info.addrs.find((a) => a.includes('/ws/'))
    assert.ok(addr, `native node has no WebSocket address: ${info.addrs}`)
    return multiaddr(addr)
  }

  test('js-libp2p connects over WebSocket and completes identify and ping', { timeout: 30_000 }, async () => {
    const conn = await node.dial(wsAddr())
    assert.equal(conn.remotePeer.toString(), info.peer_id)

    const rtt = await node.services.ping.ping(wsAddr())
    assert.ok(rtt >= 0, `ping rtt ${rtt}`)

    // Identify runs on connect; wait until the peer store holds its result.
    let peer
    for (let i = 0; i < 100; i++) {
      peer = await node.peerStore.get(conn.remotePeer).catch(() => null)
      if (peer?.protocols.includes('/ipfs/id/1.0.0')) break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    assert.ok(peer, 'no peer store entry for the native node')
    const agent = new TextDecoder().decode(peer.metadata.get('AgentVersion'))
    assert.match(agent, /^hearth/)
    for (const p of ['/ipfs/id/1.0.0', '/ipfs/ping/1.0.0', '/http/1.1', '/hearth/peer-record/1.0.0']) {
      assert.ok(peer.protocols.includes(p), `native node does not announce ${p}: ${peer.protocols}`)
    }
  })

  test('federation HTTP over a js-libp2p stream sees the authenticated peer', { timeout: 30_000 }, async () => {
    const stream = await node.dialProtocol(wsAddr(), '/http/1.1')
    stream.send(new TextEncoder().encode(
      'GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: ' + info.server_name + '\r\nConnection: close\r\n\r\n'))
    let text = ''
    for await (const chunk of stream) {
      text += new TextDecoder().decode(chunk.subarray())
    }
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/)
    const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4))
    assert.equal(body.remote_peer_id, node.peerId.toString())
    assert.ok(body.remote_server_name.startsWith('k51'), `remote server name ${body.remote_server_name}`)
  })
}
