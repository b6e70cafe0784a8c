// Bundle src/index.js with esbuild, minify with terser (about 70 bytes gzipped smaller than esbuild's
// own minifier on this code), write ingest/static/t.js and report raw / gzipped (level 9) sizes;
// exits 1 when over the gzip budget. The click-map overlay (src/overlay.js) is built the same way to
// its own file, journey_builder/static/overlay.js: it is never part of t.js.
// Usage: npm ci --prefix tracker_js && node tracker_js/build.mjs [outfile [overlay-outfile]]
import { build } from 'esbuild'
import { minify } from 'terser'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'

const here = dirname(fileURLToPath(import.meta.url))
const out = resolve(process.argv[2] || join(here, '..', 'ingest', 'static', 't.js'))
const overlayOut = resolve(process.argv[3] || join(here, '..', 'journey_builder', 'static', 'overlay.js'))
const BUDGET = 3000 // gzipped bytes

const bundle = async (entry, file) => {
  const r = await build({
    entryPoints: [join(here, 'src', entry)],
    bundle: true,
    write: false,
    format: 'iife',
    target: ['es2021'],
    legalComments: 'none',
    logLevel: 'warning',
  })
  // deterministic: same input, same options, same output
  const m = await minify(r.outputFiles[0].text, {
    ecma: 2021,
    toplevel: false, // the IIFE keeps every name out of the host page's globals
    compress: { passes: 2 }, // no unsafe_* transforms: 3 bytes are not worth a behaviour change
    mangle: true,
    format: { comments: false },
  })
  mkdirSync(dirname(file), { recursive: true })
  writeFileSync(file, m.code)
  const raw = readFileSync(file)
  const gz = gzipSync(raw, { level: 9 }).length
  console.log(`${relative(process.cwd(), file)}: ${raw.length} bytes raw, ${gz} bytes gzipped`)
  return gz
}

const gz = await bundle('index.js', out)
console.log(`t.js budget: ${BUDGET} bytes gzipped`)
if (gz > BUDGET) {
  console.error(`over the gzip budget by ${gz - BUDGET} bytes`)
  process.exit(1)
}
await bundle('overlay.js', overlayOut)
