// Writes FILE.gz and FILE.br beside each FILE given (`make wasm` runs it on
// web/app/hearth.wasm), so bin/hearth serves the browser node
// pre-compressed (see cmd/hearth/server.go). Brotli at its highest quality
// with a 16 MiB window: slow (a minute or two for the wasm) but the
// smallest download; HEARTH_BROTLI_QUALITY lowers it for quick builds.
// Prints each file's sizes.
import { readFileSync, writeFileSync } from 'node:fs'
import { gzipSync, brotliCompressSync, constants as z } from 'node:zlib'

const quality = Number(process.env.HEARTH_BROTLI_QUALITY || 11)
const mib = (n) => (n / 2 ** 20).toFixed(2) + ' MiB'

for (const file of process.argv.slice(2)) {
  const raw = readFileSync(file)
  const gz = gzipSync(raw, { level: 9 })
  writeFileSync(file + '.gz', gz)
  const br = brotliCompressSync(raw, {
    params: {
      [z.BROTLI_PARAM_QUALITY]: quality,
      [z.BROTLI_PARAM_LGWIN]: 24,
      [z.BROTLI_PARAM_SIZE_HINT]: raw.length
    }
  })
  writeFileSync(file + '.br', br)
  console.log(`${file}: ${mib(raw.length)} raw, ${mib(gz.length)} gzip, ${mib(br.length)} brotli (quality ${quality})`)
}
