/* trailmark click map section of the journey map page (GET /v1/clicks). Its own file, loaded after
 * map.js: it waits until the page is ready (body[data-state=ready], the read key in sessionStorage)
 * and then shows the clicks of one page by element and as a density grid, plus the bookmarklet that
 * loads the overlay (/map/static/overlay.js) on the live site. Text from the API goes in with
 * textContent only. */
(function () {
  "use strict";

  const KEY_STORE = "trailmark.readKey";  // where map.js keeps the read key
  const $ = (id) => document.getElementById(id);
  let loaded = false;

  function node(tag, text, cls) {
    const n = document.createElement(tag);
    if (text !== undefined && text !== null) n.textContent = String(text);
    if (cls) n.className = cls;
    return n;
  }
  const pct = (x) => `${(100 * Number(x || 0)).toFixed(1)}%`;

  async function load(page) {
    const status = $("clickmap-status");
    status.textContent = "loading…";
    const q = new URLSearchParams({ page, rows: "20", limit: "20" });
    const r = await fetch(`/v1/clicks?${q}`, {
      headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY_STORE) || ""}` }, cache: "no-store",
    });
    if (!r.ok) {
      status.textContent = `could not load the click map (${r.status})`;
      document.body.dataset.clickmap = "error";
      return;
    }
    show(await r.json());
  }

  function show(data) {
    $("clickmap-status").textContent =
      `${data.clicks} clicks by ${data.visitors} visitors in the last ${data.days} days: ` +
      `${data.rage_clicks} rage clicks, ${data.dead_clicks} dead clicks`;
    const body = $("clickmap-elements").querySelector("tbody");
    body.replaceChildren();
    for (const e of data.elements) {
      const tr = node("tr");
      tr.dataset.selector = e.selector;
      const sel = node("td");
      sel.append(node("code", e.selector));
      tr.append(sel, node("td", e.text || ""), node("td", e.clicks, "num"), node("td", pct(e.share), "num"),
        node("td", e.rage_clicks, e.rage_clicks ? "num warn" : "num"),
        node("td", e.dead_clicks, e.dead_clicks ? "num muted-warn" : "num"));
      body.append(tr);
    }
    const grid = $("clickmap-grid");
    grid.replaceChildren();
    const { cols, rows, max, cells } = data.grid;
    grid.style.setProperty("--cols", cols);
    grid.style.setProperty("--rows", rows);
    const at = new Map(cells.map((c) => [`${c.col},${c.row}`, c.clicks]));
    for (let row = 0; row < rows; row++) {
      for (let col = 0; col < cols; col++) {
        const n = at.get(`${col},${row}`) || 0;
        const cell = node("div", null, n ? "cell hot" : "cell");
        if (n) {
          cell.dataset.clicks = n;
          cell.style.setProperty("--heat", (0.15 + 0.85 * n / max).toFixed(3));
          cell.title = `${n} clicks`;
        }
        grid.append(cell);
      }
    }
    document.body.dataset.clickmap = "ready";
  }

  function bookmarklet() {
    // the overlay comes from this server; the live page's owner runs it from a bookmark
    const src = JSON.stringify(`${location.origin}/map/static/overlay.js`);
    $("clickmap-bookmarklet").href =
      `javascript:(()=>{const s=document.createElement('script');s.src=${src};document.body.append(s)})()`;
  }

  function start() {
    if (loaded || document.body.dataset.state !== "ready" || !$("clickmap")) return;
    loaded = true;
    bookmarklet();
    $("clickmap-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      load($("clickmap-page").value.trim() || "/");
    });
    load($("clickmap-page").value.trim() || "/");
  }

  document.addEventListener("DOMContentLoaded", () => {
    start();
    new MutationObserver(start).observe(document.body, { attributes: true, attributeFilter: ["data-state"] });
  });
})();
