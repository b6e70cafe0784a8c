// trailmark click-map overlay: draws where visitors click (GET /v1/clicks) over the live page.
//
// Loaded on demand by the site owner only (the bookmarklet on the map page adds this script to the
// page), never by t.js and never for ordinary visitors. The read key is pasted into a prompt and
// kept in this tab's sessionStorage (trailmark.overlayKey), never in a URL of the live site, where
// it would leak through Referer headers and access logs. Loading it again removes the overlay.
// Everything from the server (selectors, texts, counts) is shown with textContent, never as HTML;
// a selector is only handed to querySelector, inside try/catch.
const D = document
const ID = 'trailmark-overlay'
const KEY = 'trailmark.overlayKey'
const script = D.currentScript

const box = (parent, style, text) => {
  const el = D.createElement('div')
  Object.assign(el.style, { position: 'absolute', boxSizing: 'border-box', ...style })
  if (text != null) el.textContent = text
  parent.append(el)
  return el
}

const panel = (root, lines) => {
  const p = box(root, {
    position: 'fixed', bottom: '12px', right: '12px', maxWidth: '360px', padding: '10px 12px',
    background: '#1a202c', color: '#fff', font: '12px/1.5 system-ui, sans-serif', borderRadius: '6px',
    pointerEvents: 'auto', boxShadow: '0 4px 16px rgba(0,0,0,.3)', whiteSpace: 'pre-wrap',
  })
  p.dataset.part = 'panel'
  for (const l of lines) box(p, { position: 'static' }, l)
  const close = D.createElement('button')
  close.textContent = 'Close'
  close.onclick = () => root.remove()
  p.append(close)
  return p
}

const draw = (root, data) => {
  const de = D.documentElement
  Object.assign(root.style, { width: de.scrollWidth + 'px', height: de.scrollHeight + 'px' })
  const { cols, rows, max, cells } = data.grid
  for (const c of cells) {
    const cell = box(root, {
      left: (100 * c.col) / cols + '%', top: (100 * c.row) / rows + '%',
      width: 100 / cols + '%', height: 100 / rows + '%',
      background: `rgba(229, 62, 62, ${(0.15 + (0.6 * c.clicks) / max).toFixed(3)})`,
    })
    cell.dataset.part = 'cell'
    cell.dataset.clicks = c.clicks
  }
  for (const e of data.elements) {
    let target
    try {
      target = D.querySelector(e.selector)
    } catch {}
    if (!target) continue
    const r = target.getBoundingClientRect()
    const mark = box(root, {
      left: r.left + scrollX + 'px', top: r.top + scrollY + 'px', width: r.width + 'px', height: r.height + 'px',
      outline: '2px solid ' + (e.rage_clicks ? '#e53e3e' : e.dead_clicks ? '#718096' : '#3182ce'),
    })
    mark.dataset.part = 'element'
    mark.dataset.selector = e.selector
    const label = box(mark, {
      left: '0', top: '-18px', padding: '0 4px', background: '#1a202c', color: '#fff',
      font: '11px/18px system-ui, sans-serif', whiteSpace: 'nowrap',
    }, `${e.clicks} click${e.clicks == 1 ? '' : 's'} · ${Math.round(e.share * 100)}%` + (e.rage_clicks ? ` · ${e.rage_clicks} rage` : '') + (e.dead_clicks ? ` · ${e.dead_clicks} dead` : ''))
    label.dataset.part = 'label'
  }
  panel(root, [
    `trailmark click map of ${data.page}`,
    `${data.clicks} clicks by ${data.visitors} visitors in ${data.days} days; ${data.rage_clicks} rage, ${data.dead_clicks} dead`,
    ...data.elements.slice(0, 5).map((e) => `${e.clicks} × ${e.text || e.selector}`),
  ])
}

const start = () => {
  const old = D.getElementById(ID)
  if (old) return old.remove() // a second load toggles the overlay off
  const api = new URL(script.src).origin
  const key = sessionStorage.getItem(KEY) || prompt('trailmark read key (rk_...): kept in this tab only')
  if (!key) return
  const root = box(D.documentElement, { left: '0', top: '0', zIndex: '2147483647', pointerEvents: 'none' })
  root.id = ID
  fetch(`${api}/v1/clicks?page=${encodeURIComponent(location.pathname)}`, { headers: { Authorization: 'Bearer ' + key.trim() } })
    .then((r) => {
      if (!r.ok) throw Error(`the server answered ${r.status}`)
      sessionStorage.setItem(KEY, key.trim())
      return r.json()
    })
    .then((data) => draw(root, data))
    .catch((e) => {
      // a wrong key is forgotten, so the next load asks again (a 401 reads as a network error:
      // the auth answer carries no CORS header)
      sessionStorage.removeItem(KEY)
      panel(root, [`trailmark click map: could not load (${e.message}). Check the read key.`])
    })
}

start()
