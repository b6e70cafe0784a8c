// Identity: anonymousId in cookie tm_aid + localStorage (restored from whichever survives),
// userId after identify/alias, client session id rotated after 30 minutes idle.
// Cookieless mode (or no consent yet): the same ids, in memory only.
import { now, uuid } from './config.js'
import { kv, getCookie, setCookie } from './store.js'
import { QK } from './transport.js'

const AID = 'tm_aid'
const UID = 'tm_uid'
const SID = 'tm_sid'
export const ids = {}

export const save = () => {
  kv(AID, ids.a)
  setCookie(AID, ids.a)
  kv(UID, ids.u)
}

export const loadIds = () => {
  ids.a = kv(AID) || getCookie(AID) || uuid()
  ids.u = kv(UID)
  save()
}

export const session = () => {
  const t = now()
  let [id, ts] = (kv(SID) || '').split('|')
  if (!(t - ts < 18e5 /* 30 min idle */)) id = uuid()
  kv(SID, id + '|' + t)
  return id
}

export const resetIds = () => {
  ids.a = uuid()
  ids.u = null
  kv(SID, null)
  save()
}

// opt-out: forget everything stored (map, not for-of: expressions only, so terser folds this into
// optOut without a function wrapper, 4 bytes gzipped)
export const wipe = () => {
  setCookie(AID)
  ;[AID, UID, SID, QK].map((k) => kv(k, null, 1))
}
