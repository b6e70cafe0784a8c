// Key/value storage: localStorage when allowed (consent.canStore), otherwise memory only.
import { D } from './config.js'
import { canStore } from './consent.js'

const mem = {}

// kv(k) reads, kv(k, v) writes, kv(k, null) removes; force = store even if not allowed
export const kv = (k, v, force) => {
  const ls = force || canStore()
  try {
    if (v === undefined) return (ls && localStorage.getItem(k)) || mem[k]
    mem[k] = v
    ls && localStorage[v == null ? 'removeItem' : 'setItem'](k, v)
  } catch {}
}

export const getCookie = (k) => (D.cookie.match('(?:^|; )' + k + '=([^;]*)') || [])[1]

// first-party cookie, 1 year, SameSite=Lax; v == null deletes it (always allowed)
export const setCookie = (k, v) => {
  if (v == null || canStore())
    D.cookie =
      k + '=' + (v || '') + ';path=/;SameSite=Lax;max-age=' + (v ? 31536e3 : 0)
}
