// Engagement: a 1 s heartbeat adds engaged time while the page is visible and the user was
// active (mouse, keys, scroll, touch) in the last 30 s; max scroll depth in percent. Sent as
// $engagement {engaged_ms, scroll_depth} when the page hides or the SPA route changes.
import { D, DE, now, on, safe } from './config.js'
import { track } from './event.js'

let engaged = 0
let active = now()
let depth = 0

const measure = () => {
  depth = Math.max(depth, Math.min(100, Math.round(((scrollY + innerHeight) * 100) / DE.scrollHeight)))
}

export const engagement = () => {
  setInterval(
    safe(() => {
      if (!D.hidden && now() - active < 3e4) engaged += 1e3
    }),
    1e3,
  )
  for (const t of ['mousemove', 'keydown', 'scroll', 'touchstart'])
    on(
      D,
      t,
      () => {
        active = now()
        measure()
      },
      true,
    )
  measure()
}

// report engaged time so far; leave = the page view ends (SPA navigation)
export const report = (leave) => {
  if (engaged) track('$engagement', { engaged_ms: engaged, scroll_depth: depth })
  engaged = 0
  if (leave) depth = 0
}
