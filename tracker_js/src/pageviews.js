// Page views, including single-page apps: history.pushState/replaceState, popstate, hashchange.
// A navigation that leaves path + search unchanged is skipped (hash-router paths "#/..." count).
import { D, L, W, on, safe } from './config.js'
import { emit, pageCtx, setPage } from './event.js'

let key
const keyOf = () => L.pathname + L.search + (/^#[!/]/.test(L.hash) ? L.hash : '')

// page([name], [properties]); a new page view's referrer is the previous page (document.referrer
// for the first one)
export const page = (name, properties) => {
  if (typeof name == 'object') (properties = name), (name = undefined)
  if (key != (key = keyOf())) setPage(pageCtx.url != L.href ? pageCtx.url : D.referrer)
  emit('page', { name, properties })
}

export const watchHistory = (leave) => {
  const check = () =>
    setTimeout(
      safe(() => {
        if (keyOf() != key) {
          leave()
          page()
        }
      }),
    )
  for (const m of ['pushState', 'replaceState']) {
    const orig = history[m]
    history[m] = function () {
      const r = orig.apply(this, arguments)
      check()
      return r
    }
  }
  on(W, 'popstate', check)
  on(W, 'hashchange', check)
}
