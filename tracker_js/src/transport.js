// Delivery: batch by count/delay; POST {api}/v1/batch as text/plain (no CORS preflight) with
// fetch keepalive, sendBeacon when the page hides. Failed batches (network, 5xx, 429) go to a
// bounded retry queue (localStorage, or memory when storing is not allowed), retried oldest
// first with exponential backoff + jitter. Other 4xx answers are final: no retry.
import { N, cfg, iso } from './config.js'

// literals below (esbuild does not inline bundled consts): 10 events per request, 1 s delay
// before a partial batch is sent, 100 events kept in the retry queue
import { kv } from './store.js'

export const QK = 'tm_q'
let buf = []
let timer, retryTimer
let attempts = 0

const stored = () => {
  try {
    return JSON.parse(kv(QK) || '[]')
  } catch {
    return []
  }
}
const keep = (batch) => kv(QK, JSON.stringify(batch.concat(stored()).slice(0, 100)))

export const schedule = () => {
  retryTimer = retryTimer || setTimeout(retry, Math.min(1e3 * 2 ** attempts, 3e5) * (0.5 + Math.random()))
}

const retry = () => {
  retryTimer = 0
  const q = stored()
  kv(QK, JSON.stringify(q.slice(10)))
  send(q.slice(0, 10))
}

const send = (batch, beacon) => {
  const url = cfg.api.replace(/\/$/, '') + '/v1/batch'
  const body = JSON.stringify({ batch, sentAt: iso(), writeKey: cfg.key })
  if (batch[0])
    if (beacon) N.sendBeacon(url, body) || keep(batch)
    else
      // a string body is sent as text/plain;charset=UTF-8 (as sendBeacon does): no preflight
      fetch(url, { method: 'POST', body, keepalive: true })
        .then((r) => {
          if (r.status > 499 || r.status == 429) throw 0
          attempts = 0
          // delivered: drain the retry queue now, without waiting for a pending backoff
          clearTimeout(retryTimer)
          retry()
        })
        .catch(() => {
          keep(batch)
          attempts++
          schedule()
        })
}

export const flush = (beacon) => {
  clearTimeout(timer)
  timer = 0
  send(buf.splice(0), beacon)
}

export const enqueue = (e) => {
  if (buf.push(e) > 9) flush()
  else timer = timer || setTimeout(flush, 1e3)
}

export const drop = () => {
  buf = []
}
