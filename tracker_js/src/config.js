// Options: defaults, <script data-*> attributes, then trailmark('init', {...}).
export const W = window
export const D = document
export const DE = D.documentElement
export const N = navigator
export const L = location // the same object for the whole document, SPA routes included

// Options share their names with the data-attributes (camelCased by dataset):
//   key (write key), api (collector base URL, default: the origin t.js came from),
//   cookieless, autocapture (default on), respectDnt, requireConsent
const script = D.currentScript
export const cfg = {}
try {
  cfg.api = new URL(script.src).origin
  Object.assign(cfg, script.dataset)
} catch {}

export const setOptions = (o) => Object.assign(cfg, o)

// boolean option: true, '' (bare attribute) or any string but 'false' is on; unset = dflt
export const opt = (n, dflt, v = cfg[n]) => (v == null ? dflt : v !== false && v != 'false')

// Wrap fn so that it never throws into the host page.
export const safe =
  (fn) =>
  (...a) => {
    try {
      return fn(...a)
    } catch {}
  }

export const on = (t, type, fn, opts) => t.addEventListener(type, safe(fn), opts)

export const now = () => Date.now()
export const iso = () => new Date().toISOString()

// random id: a UUID where crypto.randomUUID exists (secure contexts), else 128 random bits in hex
export const uuid = () =>
  crypto.randomUUID?.() || crypto.getRandomValues(new Uint32Array(4)).join('-')
