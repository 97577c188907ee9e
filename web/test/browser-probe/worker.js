// The node worker glue of the browser probe, as the real node worker will
// do it: take the Web Lock that makes this worker the only one of the
// origin owning the database, then start the Go wasm, then serve calls
// from the page. (A classic worker: importScripts must run at top level.)
'use strict'
importScripts('./wasm_exec.js')

// The lock is held for the worker's whole life: the callback's promise
// never settles, and the browser releases the lock when the worker ends
// (closed tab, reload, terminate()). A second worker waits here until then.
const LOCK = 'hearth-node'

async function holdLock () {
  await new Promise((resolve, reject) => {
    navigator.locks.request(LOCK, { signal: AbortSignal.timeout(15000) }, () => {
      resolve()
      return new Promise(() => {})
    }).catch(reject)
  })
}

async function boot () {
  const t0 = performance.now()
  await holdLock()
  const tLock = performance.now()
  const go = new Go()
  const { instance } = await WebAssembly.instantiateStreaming(fetch('./probe.wasm'), go.importObject)
  go.run(instance).then(() => postMessage({ fatal: 'the Go program exited' }))
  while (!self.hearthProbe) await new Promise((resolve) => setTimeout(resolve, 2))
  return { lock_ms: tLock - t0, wasm_ms: performance.now() - tLock }
}

// webcryptoBench measures WebCrypto Ed25519 verification (a candidate to
// offload VerifyJSON's signature check from Go), sequential and batched.
async function webcryptoBench ({ n = 1000 }) {
  const subtle = self.crypto.subtle
  let keys
  try {
    keys = await subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify'])
  } catch (e) {
    return { supported: false, error: String(e) }
  }
  const msg = new TextEncoder().encode('x'.repeat(1024))
  const sig = await subtle.sign({ name: 'Ed25519' }, keys.privateKey, msg)
  let t = performance.now()
  for (let i = 0; i < n; i++) {
    if (!await subtle.verify({ name: 'Ed25519' }, keys.publicKey, sig, msg)) throw new Error('verify failed')
  }
  const seq = performance.now() - t
  t = performance.now()
  const all = await Promise.all(Array.from({ length: n }, () => subtle.verify({ name: 'Ed25519' }, keys.publicKey, sig, msg)))
  if (!all.every(Boolean)) throw new Error('verify failed')
  const par = performance.now() - t
  return { supported: true, n, sequential_per_s: n / seq * 1000, batched_per_s: n / par * 1000 }
}

// opfsList lists the files of the origin's OPFS root, with their sizes.
async function opfsList () {
  const root = await navigator.storage.getDirectory()
  const out = []
  for await (const [name, handle] of root.entries()) {
    out.push({ name, kind: handle.kind, size: handle.kind === 'file' ? (await handle.getFile()).size : 0 })
  }
  return out.sort((a, b) => a.name.localeCompare(b.name))
}

const booted = boot()
booted.then((times) => postMessage({ ready: true, ...times }),
  (e) => postMessage({ fatal: String(e && e.stack || e) }))

self.onmessage = async (e) => {
  const { id, op, args } = e.data
  try {
    await booted
    let result
    if (op === 'webcryptoBench') {
      result = await webcryptoBench(args)
    } else if (op === 'opfsList') {
      result = await opfsList()
    } else {
      const fn = self.hearthProbe[op]
      if (typeof fn !== 'function') throw new Error('no such op: ' + op)
      result = JSON.parse(await fn(JSON.stringify(args)))
    }
    postMessage({ id, result })
  } catch (err) {
    postMessage({ id, error: String(err && err.message || err) })
  }
}
