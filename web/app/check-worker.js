// A check worker: one of the node worker's pool (see node-worker.js and
// wasm/checker.go). It runs hearth.wasm as a checker (HEARTH_ROLE), from
// the module the node worker already compiled, and checks the batches of
// other servers' events the node hands it: parse, hashes, signatures,
// event IDs, off the node's own thread.
//
// Protocol with the node worker:
//   in   {module}                        once, first
//   out  {ready: true} | {failed: msg}
//   in   {id, version, events: [Uint8Array]}
//   out  {id, out: [[refused, eventID, json, redacted]]} | {id, error}
'use strict'
importScripts('./wasm_exec.js')

async function load (module) {
  const go = new Go()
  go.env = { HEARTH_ROLE: 'checker' }
  const instance = await WebAssembly.instantiate(module, go.importObject)
  const loaded = new Promise((resolve) => { self.hearthLoaded = resolve })
  go.run(instance).then(() => postMessage({ failed: 'the Go program exited' }))
  await loaded
}

self.onmessage = (e) => {
  const m = e.data
  if (m.module) {
    load(m.module).then(() => postMessage({ ready: true }), (err) => postMessage({ failed: String(err) }))
    return
  }
  self.hearthChecker.check(m.version, m.events).then((out) => {
    postMessage({ id: m.id, out }, out.filter((a) => a[2]).map((a) => a[2].buffer))
  }, (err) => postMessage({ id: m.id, error: String(err) }))
}
