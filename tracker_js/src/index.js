// trailmark.js entry: the window.trailmark API; processes the calls queued by the async stub
//   window.trailmark = window.trailmark || function(){(window.trailmark.q = window.trailmark.q || []).push(arguments)}
import { D, W, on, opt, safe, setOptions } from './config.js'
import { blocked, setConsent } from './consent.js'
import { ids, loadIds, resetIds, save, wipe } from './identity.js'
import { drop, flush, schedule } from './transport.js'
import { emit, track } from './event.js'
import { page, watchHistory } from './pageviews.js'
import { autocapture } from './autocapture.js'
import { engagement, report } from './engagement.js'

let started

const api = {
  track,
  page,
  // feedback('nps' | 'csat', score, [comment]): an NPS (0-10) or CSAT (1-5) answer, sent as the
  // events the server reads for them (journeys.analysis.nps_event / csat_event, default names)
  feedback: (kind, score, comment) => track(kind.toUpperCase() + ' Answered', { score: +score, comment }),
  // identify([userId], [traits])
  identify(userId, traits) {
    // identify(traits) and identify(null, traits) keep the stored userId
    typeof userId == 'object' ? (traits = userId || traits) : userId && (ids.u = userId)
    save()
    emit('identify', { traits })
  },
  alias(userId) {
    emit('alias', { previousId: ids.u || ids.a, userId })
    ids.u = userId
    save()
  },
  reset: resetIds,
  optOut() {
    setConsent(0)
    drop()
    wipe()
  },
  optIn() {
    const was = blocked()
    setConsent(1)
    save()
    if (was && started) page() // the page view that was not sent
  },
}

const tm = safe((m, ...a) => (m == 'init' ? setOptions(a[0]) : api[m]?.(...a)))

safe(() => {
  const q = W.trailmark?.q || []
  if (W.trailmark?.tm) return // t.js included twice
  W.trailmark = tm
  tm.tm = 1
  // options first, so that e.g. cookieless applies before any id is created
  for (const a of q) if (a[0] == 'init') setOptions(a[1])
  loadIds()
  for (const a of q) tm(...a) // calls made before load (e.g. identify) go before the page view
  started = 1
  page()
  watchHistory(() => report(1))
  if (opt('autocapture', 1)) autocapture()
  engagement()
  const hide = () => {
    report()
    flush(1)
  }
  on(D, 'visibilitychange', () => D.hidden && hide())
  on(W, 'pagehide', hide)
  schedule()
})()
