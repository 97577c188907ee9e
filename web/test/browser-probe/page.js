// The page side of the browser probe: it starts the dedicated worker that
// runs the probe wasm and relays calls to it. The test drives it with
// page.evaluate:
//   await probeReady()                  -> {lock_ms, wasm_ms}
//   await probe(op, args)               -> the Go op's result (an object)
//   probeAcks()                         -> highest id the worker reported committed
//   probeKill()                         -> terminate the worker at once (a crash)
//   probeRestart()                      -> start a new worker (after probeKill)
'use strict'

let worker = null
let ready = null
let seq = 0
let lastAck = -1
const pending = new Map()

function log (line) {
  document.getElementById('log').textContent += line + '\n'
}

function start () {
  worker = new Worker('./worker.js')
  ready = new Promise((resolve, reject) => {
    worker.onmessage = (e) => {
      const m = e.data
      if (m.ready) {
        log('worker ready: ' + JSON.stringify(m))
        resolve(m)
      } else if (m.fatal) {
        log('worker failed: ' + m.fatal)
        reject(new Error(m.fatal))
      } else if ('ack' in m) {
        lastAck = m.ack
      } else if (pending.has(m.id)) {
        const p = pending.get(m.id)
        pending.delete(m.id)
        if (m.error) p.reject(new Error(m.error))
        else p.resolve(m.result)
      }
    }
    worker.onerror = (e) => reject(new Error('worker error: ' + e.message))
  })
  return ready
}

window.probeReady = () => ready
window.probeAcks = () => lastAck
window.probeKill = () => {
  worker.terminate()
  for (const p of pending.values()) p.reject(new Error('worker terminated'))
  pending.clear()
}
window.probeRestart = () => start()
window.probe = async (op, args = {}) => {
  await ready
  const id = ++seq
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject })
    worker.postMessage({ id, op, args })
  })
}

start()
