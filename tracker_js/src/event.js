// Builds Segment-compatible events (common fields + context) and hands them to the transport.
import { D, L, N, iso, uuid } from './config.js'
import { blocked, canStore, choice, dnt } from './consent.js'
import { ids, session } from './identity.js'
import { enqueue } from './transport.js'

// context.page of every event: the current page view, captured when it starts, so events sent
// during a SPA route change (e.g. $engagement of the page being left) keep their own page
export let pageCtx
export const setPage = (referrer) => {
  pageCtx = { url: L.href, path: L.pathname, referrer, title: D.title, search: L.search }
}
setPage(D.referrer)

const CAMPAIGN = 'utm_source utm_medium utm_campaign utm_term utm_content gclid gbraid wbraid msclkid fbclid ttclid li_fat_id'.split(' ')

const context = () => {
  const q = new URLSearchParams(pageCtx.search)
  let campaign
  for (const k of CAMPAIGN) {
    const v = q.get(k)
    if (v) (campaign = campaign || {})[k.replace('utm_', '').replace('campaign', 'name')] = v
  }
  return {
    page: pageCtx,
    userAgent: N.userAgent,
    locale: N.language,
    timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
    screen: { width: screen.width, height: screen.height },
    campaign,
    library: { name: 'trailmark.js', version: '0.1.0' },
    sessionId: session(),
    // [1 opted in, or null: no choice made; DNT or GPC on; ids stored (false: cookieless)]; an
    // opt-out sends nothing at all
    consent: [choice, dnt(), canStore()],
  }
}

export const emit = (type, fields) => {
  if (!blocked())
    enqueue({ type, messageId: uuid(), anonymousId: ids.a, userId: ids.u, timestamp: iso(), context: context(), ...fields })
}

export const track = (event, properties) => emit('track', { event, properties })
