// Autocapture: clicks ($click, $outbound, $download, $rage_click), form submits ($form_submit;
// with data-identify, an identify carrying traits.email) and JS errors ($error).
import { D, L, W, now, on } from './config.js'
import { emit, track } from './event.js'

const CLICKABLE = 'a,button,[data-track],[type=submit],[role=button]'
const DOWNLOAD = /\.(pdf|zip|rar|7z|gz|dmg|exe|msi|apk|csv|xlsx?|docx?|pptx?|mp[34])$/i

// short CSS selector: up to 3 levels (tag#id or tag.class1.class2), stopping at an id or <body>
const selector = (el, depth = 3, p = el.parentElement) => {
  const s = el.localName + (el.id ? '#' + CSS.escape(el.id) : [...el.classList].slice(0, 2).map((c) => '.' + CSS.escape(c)).join(''))
  return el.id || !--depth || !p || p == D.body ? s : selector(p, depth) + '>' + s
}

// element description; text is the rendered text (max 100 chars): innerText never includes
// what was typed into a form field
const describe = (el, extra) => ({
  selector: selector(el),
  text: el.innerText?.replace(/\s+/g, ' ').trim().slice(0, 100),
  tag: el.localName,
  ...extra,
})

let rageEl, rageStart, rageCount
let errors = 0

export const autocapture = () => {
  on(D, 'click', (e) => {
    const t = e.target
    const n = now()
    // rage click: 3 clicks within 1 s on the same element
    if (t != rageEl || n - rageStart > 1e3) (rageEl = t), (rageStart = n), (rageCount = 0)
    if (++rageCount == 3) track('$rage_click', describe(t))

    const el = t.closest(CLICKABLE)
    const a = el?.closest('a[href]')
    const href = a?.href
    if (el) track('$click', describe(el, { href, track: el.dataset.track }))
    if (href) {
      const u = new URL(href)
      if (/^http/.test(u.protocol) && u.host != L.host) track('$outbound', { href })
      if (a.hasAttribute('download') || DOWNLOAD.test(u.pathname)) track('$download', { href })
    }
  }, true)

  on(D, 'submit', (e) => {
    const f = e.target
    const g = (n) => f.getAttribute(n) // not f.id etc.: a field named "id" would shadow it
    const fields = []
    for (const el of f.elements) if (el.name && !fields.includes(el.name)) fields.push(el.name)
    const m = f.hasAttribute('data-identify') && f.querySelector('[type=email],[name*=email i]')
    const email = m && m.value.trim()
    if (/.@./.test(email)) emit('identify', { traits: { email } })
    track('$form_submit', { id: g('id'), name: g('name'), action: g('action'), fields })
  }, true)

  const err = (message, source, line, col) => {
    if (errors++ < 10) track('$error', { message: ('' + message).slice(0, 500), source, line, col })
  }
  on(W, 'error', (e) => err(e.message, e.filename, e.lineno, e.colno))
  on(W, 'unhandledrejection', (e) => err(e.reason?.message || e.reason))
}
