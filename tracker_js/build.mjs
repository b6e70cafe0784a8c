// Bundle + minify src/index.js into ingest/static/t.js and report raw / gzipped (level 9) sizes;
// exits 1 when over the gzip budget.
// Usage: npm ci --prefix tracker_js && node tracker_js/build.mjs [outfile]
import { build } from 'esbuild'
import { mkdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'

const here = dirname(fileURLToPath(import.meta.url))
const out = resolve(process.argv[2] || join(here, '..', 'ingest', 'static', 't.js'))
const BUDGET = 3000 // gzipped bytes

mkdirSync(dirname(out), { recursive: true })
await build({
  entryPoints: [join(here, 'src', 'index.js')],
  outfile: out,
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2021'],
  legalComments: 'none',
  logLevel: 'warning',
})

const raw = readFileSync(out)
const gz = gzipSync(raw, { level: 9 }).length
console.log(`${relative(process.cwd(), out)}: ${raw.length} bytes raw, ${gz} bytes gzipped (budget ${BUDGET})`)
if (gz > BUDGET) {
  console.error(`over the gzip budget by ${gz - BUDGET} bytes`)
  process.exit(1)
}
