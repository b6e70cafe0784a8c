// Autocapture: clicks ($click on every click, $rage_click), form submits ($form_submit;
// with data-identify, an identify carrying traits.email) and JS errors ($error).
import { D, DE, W, now, on } from './config.js'
import { emit, track } from './event.js'

const CLICKABLE = 'a,button,[data-track],[type=submit],[role=button]'

// element selector: up to 3 levels, each tag#id or tag.class1.class2, plus :nth-of-type(n) when a
// sibling matches the same; stops at an id or <body>
const selector = (el, depth = 3, p = el.parentElement, k = [...(p?.children || [])]) => {
  let s = el.localName + (el.id ? '#' + CSS.escape(el.id) : [...el.classList].slice(0, 2).map((c) => '.' + CSS.escape(c)).join(''))
  if (!el.id && (k = k.filter((c) => c.localName == el.localName))[1]) s += `:nth-of-type(${k.indexOf(el) + 1})`
  return el.id || !--depth || !p || p == D.body ? s : selector(p, depth) + '>' + s
}

// element description; selector at most 200 chars; text is the rendered text (max 100 chars):
// innerText never includes what was typed into a form field
const describe = (el, extra) => ({
  selector: selector(el).slice(0, 200),
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

    // every click: on the clickable element holding the target, else on the target itself; dead:
    // neither in a clickable element nor a form control (input, select, textarea, label, option...). Position on the page (x, y of pw × ph document px) and
    // in the element (ex, ey: % of its width, height)
    const el = t.closest(CLICKABLE)
    const c = el || t
    const r = c.getBoundingClientRect()
    track('$click', describe(c, {
      href: c.closest('a[href]')?.href, // outbound and download links: see docs/sql.md
      track: c.dataset.track,
      x: e.pageX | 0,
      y: e.pageY | 0,
      pw: DE.scrollWidth,
      ph: DE.scrollHeight,
      ex: ((e.x - r.x) * 100) / r.width | 0, // e.x, e.y: clientX, clientY
      ey: ((e.y - r.y) * 100) / r.height | 0,
      dead: !(el || 'form' in t),
    }))
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
