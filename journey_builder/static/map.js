/* trailmark customer journey map. Plain JS, no build step; charts by Chart.js 4.5.1 and
 * chartjs-chart-sankey 0.19.1 (MIT, vendored in ./vendor). Data only from this server's read API,
 * authorised with the site's read key (Authorization: Bearer), which is kept in sessionStorage.
 * Everything from the API is put in the page with textContent, never as HTML. */
(function () {
  "use strict";

  const STAGES = ["Awareness", "Consideration", "Decision", "Retention", "Advocacy"];
  const STAGE_COLORS = {
    Awareness: "#6c8cff", Consideration: "#38b2ac", Decision: "#f6ad55",
    Retention: "#9f7aea", Advocacy: "#f56590",
  };
  const CHANNEL_COLORS = {
    "Direct": "#718096", "Organic Search": "#38a169", "Paid Search": "#dd6b20",
    "Organic Social": "#3182ce", "Paid Social": "#805ad5", "Email": "#d69e2e",
    "Referral": "#319795", "Display": "#e53e3e", "Affiliates": "#b7791f", "Paid Other": "#c05621",
    "Organic Video": "#2b6cb0", "Paid Video": "#9b2c2c", "Organic Shopping": "#2f855a",
    "Paid Shopping": "#c53030", "Cross-network": "#553c9a", "SMS": "#2c7a7b", "Audio": "#744210",
    "Mobile Push Notifications": "#4c51bf", "Internal": "#a0aec0", "Other": "#4a5568",
  };
  const KIND_LABELS = {
    session_start: "visit", form_submit: "form", conversion: "conversion", contact: "contact request",
    identify: "identified",
  };
  const KEY_STORE = "trailmark.readKey";
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const charts = {};

  // ---- small helpers ------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k === "style") {
        for (const [prop, val] of Object.entries(v)) {
          if (prop.startsWith("--")) node.style.setProperty(prop, val); else node.style[prop] = val;
        }
      }
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function hashColor(text) {
    let h = 0;
    for (const ch of String(text)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    return `hsl(${h % 360}, 55%, 50%)`;
  }
  const channelColor = (c) => CHANNEL_COLORS[c] || hashColor(c || "?");
  const fmtInt = (n) => Number(n || 0).toLocaleString("en");
  const fmtPct = (x) => `${(100 * Number(x || 0)).toFixed(Number(x) >= 0.1 || !x ? 0 : 1)}%`;

  function parseTime(t) {
    // API times are UTC "YYYY-MM-DD HH:MM:SS.mmm" (or ISO)
    if (!t) return NaN;
    const iso = String(t).replace(" ", "T");
    return Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z");
  }
  function fmtTime(t) {
    const ms = typeof t === "number" ? t : parseTime(t);
    if (Number.isNaN(ms)) return "";
    return new Date(ms).toLocaleString("en-GB", {
      day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
    });
  }
  function fmtHours(h) {
    if (h === null || h === undefined || Number.isNaN(Number(h))) return "";
    const x = Number(h);
    if (x < 1) return `${Math.max(1, Math.round(x * 60))} min`;
    if (x < 48) return `${x.toFixed(x < 10 ? 1 : 0)} h`;
    return `${(x / 24).toFixed(1)} d`;
  }
  function fmtDuration(s) {
    s = Number(s || 0);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  }
  const stepLabel = (node) => String(node).replace(/^\d+:/, "");

  function showError(message) {
    const e = $("error");
    e.textContent = message;
    e.hidden = !message;
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // ---- key handling and API ---------------------------------------------------------------------

  function readKey() { return sessionStorage.getItem(KEY_STORE) || ""; }

  function takeKeyFromUrl() {
    const key = params.get("key");
    if (key) {
      sessionStorage.setItem(KEY_STORE, key.trim());
      params.delete("key");  // keep the key out of history, bookmarks and screenshots of the URL bar
      const q = params.toString();
      history.replaceState(null, "", location.pathname + (q ? `?${q}` : "") + location.hash);
    }
  }

  async function api(path, options) {
    const headers = { Authorization: `Bearer ${readKey()}` };
    if (options && options.body) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { ...options, headers, cache: "no-store" });
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (!r.ok) {
      const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : r.statusText;
      throw new ApiError(r.status, `${r.status}: ${detail}`);
    }
    return body;
  }
  const get = (path, query) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query || {})) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
    const s = q.toString();
    return api(s ? `${path}?${s}` : path);
  };

  function askForKey(message) {
    $("key-panel").hidden = false;
    $("site-view").hidden = true;
    $("contact-view").hidden = true;
    $("account-view").hidden = true;
    $("forget-key").hidden = true;
    showError(message || "");
    document.body.dataset.state = "need-key";
    $("key-input").focus();
  }

  function setUrl(changes) {
    for (const [k, v] of Object.entries(changes)) {
      if (v === "" || v === null || v === undefined) params.delete(k); else params.set(k, v);
    }
    const q = params.toString();
    history.replaceState(null, "", location.pathname + (q ? `?${q}` : ""));
  }

  // ---- charts ------------------------------------------------------------------------------------

  function chart(id, config) {
    if (charts[id]) charts[id].destroy();
    charts[id] = new window.Chart($(id), config);
    return charts[id];
  }

  function emptyNote(canvasId, text) {
    const box = $(canvasId).parentElement;
    box.querySelectorAll(".empty").forEach((n) => n.remove());
    if (text) box.append(el("p", { class: "empty", text }));
  }

  // ---- the whole site ----------------------------------------------------------------------------

  async function loadStages() {
    const [stages, lists] = await Promise.all([
      get("/v1/stages"),
      Promise.all(STAGES.map((s) => get("/v1/journeys", { stage: s, limit: 5 }).catch(() => ({ contacts: [] })))),
    ]);
    const breakdown = stages.breakdown || [];
    const byStage = Object.fromEntries((stages.stages || []).map((s) => [s.stage, s]));
    const root = $("stages");
    root.replaceChildren();
    STAGES.forEach((name, i) => {
      const s = byStage[name] || { contacts: 0, entered: 0 };
      const channels = {};
      const kinds = {};
      for (const r of breakdown) {
        if (r.stage !== name) continue;
        kinds[r.kind] = (kinds[r.kind] || 0) + Number(r.n);
        if (r.kind === "session_start") channels[r.channel || "Direct"] = (channels[r.channel || "Direct"] || 0) + Number(r.n);
      }
      const topChannels = Object.entries(channels).sort((a, b) => b[1] - a[1]).slice(0, 4);
      const maxChannel = topChannels.length ? topChannels[0][1] : 1;
      const outgoing = (stages.transitions || []).filter((t) => t.from === name).sort((a, b) => b.contacts - a.contacts);
      const people = (lists[i] && lists[i].contacts) || [];
      root.append(el("article", { class: "stage", "data-stage": name, style: { "--stage": STAGE_COLORS[name] } },
        el("header", {},
          el("span", { class: "stage-step", text: String(i + 1) }),
          el("h3", { text: name })),
        el("div", { class: "count", "data-count": String(s.contacts), text: fmtInt(s.contacts) }),
        el("div", { class: "count-label", text: `contact${s.contacts === 1 ? "" : "s"} now` }),
        el("div", { class: "entered", "data-entered": String(s.entered), text: `${fmtInt(s.entered)} entered in all` }),
        el("h4", { text: "Channels" }),
        topChannels.length
          ? el("ul", { class: "bars" }, topChannels.map(([c, n]) => el("li", { title: `${c}: ${n} sessions` },
            el("span", { class: "bar-label", text: c }),
            el("span", { class: "bar" }, el("span", { class: "bar-fill", style: { width: `${Math.max(6, 100 * n / maxChannel)}%`, background: channelColor(c) } })),
            el("span", { class: "bar-value", text: fmtInt(n) }))))
          : el("p", { class: "muted", text: "no sessions" }),
        el("h4", { text: "Touchpoints" }),
        Object.keys(kinds).length
          ? el("div", { class: "chips" }, Object.entries(kinds).sort((a, b) => b[1] - a[1]).map(([k, n]) =>
            el("span", { class: `chip kind-${k}`, "data-kind": k, text: `${KIND_LABELS[k] || k} ${fmtInt(n)}` })))
          : el("p", { class: "muted", text: "none" }),
        outgoing.length ? el("h4", { text: "Next" }) : null,
        outgoing.length ? el("ul", { class: "next" }, outgoing.map((t) => el("li", {},
          el("span", { text: `→ ${t.to}` }),
          el("span", { class: "muted", text: ` ${fmtInt(t.contacts)} · median ${fmtHours(t.median_hours)}` })))) : null,
        people.length ? el("h4", { text: "Contacts" }) : null,
        people.length ? el("ul", { class: "people" }, people.map((p) => el("li", {},
          el("a", { href: `/map?contact=${encodeURIComponent(p.contact_id)}`, text: p.contact_id.replace(/^(user|email):/, "") }),
          el("span", { class: "muted", text: ` ${p.first_channel || ""}` })))) : null,
      ));
    });
  }

  async function loadFunnel() {
    const steps = $("funnel-steps").value.trim();
    const by = $("funnel-by").value;
    const windowS = $("funnel-window").value;
    setUrl({ steps: steps === DEFAULT_STEPS ? "" : steps });
    const list = $("funnel-steps-list");
    list.replaceChildren();
    if (!steps) { emptyNote("funnel-chart", "Give the funnel steps: page paths or event names."); return; }
    const f = await get("/v1/funnel", { steps, window: windowS, by });
    const labels = f.steps.map((s) => s.step);
    let datasets;
    const groups = Object.entries(f.by || {});
    if (by && groups.length) {
      datasets = groups.sort((a, b) => b[1][0] - a[1][0]).map(([g, counts]) => ({
        label: g, data: counts, backgroundColor: channelColor(g), stack: "all", borderRadius: 3,
      }));
    } else {
      datasets = [{ label: "contacts", data: f.steps.map((s) => s.count), backgroundColor: "#6c8cff", borderRadius: 3 }];
    }
    chart("funnel-chart", {
      type: "bar",
      data: { labels, datasets },
      options: {
        maintainAspectRatio: false,
        plugins: {
          legend: { display: datasets.length > 1, position: "bottom", labels: { boxWidth: 12 } },
          tooltip: { callbacks: { footer: (items) => {
            const s = f.steps[items[0].dataIndex];
            return `${fmtInt(s.count)} contacts · ${fmtPct(s.conversion)} of step 1`;
          } } },
        },
        scales: { x: { stacked: true, grid: { display: false } }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
    emptyNote("funnel-chart", f.steps.every((s) => !s.count) ? "No contact reached the first step." : "");
    f.steps.forEach((s, i) => list.append(el("li", { "data-count": String(s.count) },
      el("span", { class: "stage-step", style: { "--stage": STAGE_COLORS[STAGES[Math.min(i, 4)]] }, text: String(i + 1) }),
      el("span", { class: "step-name", text: s.step }),
      el("strong", { text: fmtInt(s.count) }),
      el("span", { class: "muted", text: i ? ` ${fmtPct(s.conversion)} of step 1` : " reached step 1" }))));
  }

  async function loadAttribution() {
    const conversion = $("attribution-conversion").value.trim();
    if (!conversion) return;
    const a = await get("/v1/attribution", {
      conversion, model: $("attribution-model").value, by: $("attribution-by").value,
    });
    const rows = a.rows || [];
    chart("attribution-chart", {
      type: "bar",
      data: {
        labels: rows.map((r) => r.key || "(none)"),
        datasets: [{
          label: "credit", data: rows.map((r) => r.credit), borderRadius: 3,
          backgroundColor: rows.map((r) => (a.by === "channel" ? channelColor(r.key) : hashColor(r.key))),
        }],
      },
      options: {
        indexAxis: "y", maintainAspectRatio: false,
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { label: (item) => `${Number(item.raw).toFixed(2)} conversions · ${fmtPct(rows[item.dataIndex].share)}` } },
        },
        scales: { x: { beginAtZero: true }, y: { grid: { display: false } } },
      },
    });
    emptyNote("attribution-chart", rows.length ? "" : `No "${conversion}" conversions in the last ${a.lookback_days} days.`);
    $("attribution-note").textContent =
      `${fmtInt(a.total_conversions)} "${a.conversion}" conversions, ${a.model.replace(/_/g, " ")} model, ${a.lookback_days}-day lookback.`;
  }

  async function loadPaths() {
    const p = await get("/v1/paths", { from: $("paths-from").value.trim(), depth: $("paths-depth").value, limit: 30 });
    const links = (p.links || []).filter((l) => l.value > 0);
    if (!links.length) {  // the sankey plugin cannot draw an empty chart (it reads the first link)
      if (charts["paths-chart"]) charts["paths-chart"].destroy();
      delete charts["paths-chart"];
      emptyNote("paths-chart", "No paths yet.");
      return;
    }
    const nodes = new Set();
    links.forEach((l) => { nodes.add(l.source); nodes.add(l.target); });
    const labels = Object.fromEntries([...nodes].map((n) => [n, stepLabel(n)]));
    const column = Object.fromEntries([...nodes].map((n) => [n, Number(String(n).split(":")[0]) - 1 || 0]));
    const nodeColor = (n) => {
      const name = stepLabel(n);
      return name.startsWith("/") ? STAGE_COLORS[STAGES[Math.min(column[n], STAGES.length - 1)]] : "#f56590";
    };
    chart("paths-chart", {
      type: "sankey",
      data: {
        datasets: [{
          label: "paths",
          data: links.map((l) => ({ from: l.source, to: l.target, flow: l.value })),
          labels, column,
          colorFrom: (c) => nodeColor(c.dataset.data[c.dataIndex].from),
          colorTo: (c) => nodeColor(c.dataset.data[c.dataIndex].to),
          colorMode: "gradient", alpha: 0.45, nodeWidth: 12, nodePadding: 18,
          borderWidth: 0, size: "max", color: "#1a202c", font: { size: 12 },
        }],
      },
      options: {
        maintainAspectRatio: false,
        layout: { padding: { right: 8 } },
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { label: (item) => {
            const d = item.raw;
            return `${stepLabel(d.from)} → ${stepLabel(d.to)}: ${fmtInt(d.flow)}`;
          } } },
        },
      },
    });
    emptyNote("paths-chart", links.length ? "" : "No paths yet.");
  }

  async function loadPainPoints() {
    const p = await get("/v1/pain-points", { limit: 8 });
    const exits = $("exit-pages").tBodies[0];
    exits.replaceChildren(...(p.exit_pages || []).map((r) => el("tr", {},
      el("td", { class: "mono", text: r.page }), el("td", { text: fmtInt(r.exits) }),
      el("td", { text: fmtInt(r.pageviews) }),
      el("td", {}, el("span", { class: "meter", style: { "--v": String(Math.min(1, r.exit_rate)) } }), ` ${fmtPct(r.exit_rate)}`))));
    const drop = $("stage-dropoff").tBodies[0];
    drop.replaceChildren(...(p.stage_dropoff || []).map((r) => el("tr", {},
      el("td", {}, el("span", { class: "dot", style: { background: STAGE_COLORS[r.stage] || "#a0aec0" } }), r.stage),
      el("td", { text: fmtInt(r.stuck_contacts) }),
      el("td", { class: "mono", text: (r.top_exit_pages || []).map((x) => `${x.page} (${x.count})`).join(", ") }))));
    const fr = $("frustration");
    const items = [
      ...(p.rage_clicks || []).map((r) => el("li", {}, el("span", { class: "chip warn", text: "rage clicks" }), ` ${r.page} ${r.selector || ""} ×${r.count}`)),
      ...(p.errors || []).map((r) => el("li", {}, el("span", { class: "chip bad", text: "error" }), ` ${r.message} (${r.source || "?"}) ×${r.count}`)),
    ];
    fr.replaceChildren(...(items.length ? items : [el("li", { class: "muted", text: "None recorded." })]));
  }

  const DEFAULT_STEPS = "/, /pricing, Signed Up";

  async function siteView() {
    $("site-view").hidden = false;
    $("nav").replaceChildren(el("span", { text: "Whole site" }));
    $("funnel-steps").value = params.get("steps") || DEFAULT_STEPS;
    const lastStep = $("funnel-steps").value.split(",").map((x) => x.trim()).filter(Boolean).pop() || "";
    $("attribution-conversion").value = params.get("conversion") || (lastStep && !lastStep.startsWith("/") ? lastStep : "Signed Up");
    $("funnel-form").onsubmit = (e) => { e.preventDefault(); guard(loadFunnel()); };
    $("attribution-form").onsubmit = (e) => { e.preventDefault(); guard(loadAttribution()); };
    $("paths-form").onsubmit = (e) => { e.preventDefault(); guard(loadPaths()); };
    // panels load independently: one failing (say, an unknown funnel step) leaves the others drawn
    const results = await Promise.allSettled([loadStages(), loadFunnel(), loadAttribution(), loadPaths(), loadPainPoints()]);
    const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason);
    const auth = failed.find((e) => e instanceof ApiError && (e.status === 401 || e.status === 403));
    if (auth) throw auth;
    if (failed.length) throw new Error(failed.map((e) => e.message || String(e)).join("; "));
  }

  // ---- one contact -------------------------------------------------------------------------------

  function currentStage(transitions) {
    let best = "";
    for (const t of transitions) if (STAGES.indexOf(t.stage) > STAGES.indexOf(best)) best = t.stage;
    return best;
  }

  async function contactView(contact) {
    $("contact-view").hidden = false;
    $("nav").replaceChildren(el("a", { href: "/map", text: "Whole site" }), el("span", { text: " / " }),
      el("span", { text: contact }));
    const j = await get(`/v1/journeys/${encodeURIComponent(contact)}`);
    const c = j.contact || {};
    const sessions = j.sessions || [];
    const touchpoints = j.touchpoints || [];
    const transitions = j.stage_transitions || [];
    const now = currentStage(transitions);
    const name = [c.first_name, c.last_name].filter(Boolean).join(" ");
    const devices = new Set(sessions.map((s) => s.anonymous_id)).size || (j.anonymous_ids || []).length;
    const channels = [...new Set(sessions.map((s) => s.channel))];
    const first = sessions.length ? sessions[0].start : "";
    const last = sessions.length ? sessions[sessions.length - 1].end : "";
    document.title = `${name || c.email || j.contact_id} · journey · trailmark`;
    $("profile").replaceChildren(
      el("div", { class: "who" },
        el("h2", { text: name || c.email || j.contact_id }),
        el("p", { class: "muted mono", text: j.contact_id }),
        el("p", {}, [c.email, c.company_name || c.company_domain, c.country].filter(Boolean).join(" · "))),
      el("dl", { class: "facts" },
        el("div", {}, el("dt", { text: "stage now" }), el("dd", { "data-stage-now": now, style: { color: STAGE_COLORS[now] || "inherit" }, text: now || "—" })),
        el("div", {}, el("dt", { text: "sessions" }), el("dd", { "data-sessions": String(sessions.length), text: fmtInt(sessions.length) })),
        el("div", {}, el("dt", { text: "devices" }), el("dd", { "data-devices": String(devices), text: fmtInt(devices) })),
        el("div", {}, el("dt", { text: "conversions" }), el("dd", { text: fmtInt((j.conversions || []).length) })),
        el("div", {}, el("dt", { text: "first seen" }), el("dd", { text: fmtTime(first) })),
        el("div", {}, el("dt", { text: "last seen" }), el("dd", { text: fmtTime(last) }))),
      el("div", { class: "chips" }, channels.map((ch) => el("span", { class: "chip", style: { background: channelColor(ch), color: "#fff" }, text: ch }))),
      interestChips(j.interests),
      accountLinks([
        ...(c.company_domain ? [[`domain:${c.company_domain}`, c.company_name || c.company_domain]] : []),
        ...(j.accounts || []).map((a) => [a.group_id, a.name || a.group_id]),
      ]),
    );

    // stage lanes: touchpoints in the stage the contact was in at that moment
    const entered = Object.fromEntries(transitions.map((t) => [t.stage, t]));
    const sessionsById = Object.fromEntries(sessions.map((s) => [s.session_id, s]));
    const lanes = $("lanes");
    lanes.replaceChildren();
    STAGES.forEach((stage, i) => {
      const t = entered[stage];
      const items = touchpoints.filter((tp) => (tp.stage || "Awareness") === stage);
      lanes.append(el("article", { class: `stage lane${t ? "" : " not-reached"}`, "data-stage": stage, style: { "--stage": STAGE_COLORS[stage] } },
        el("header", {}, el("span", { class: "stage-step", text: String(i + 1) }), el("h3", { text: stage })),
        el("p", { class: "entered", text: t ? `entered ${fmtTime(t.entered_at)}` : "not reached" }),
        t ? el("p", { class: "muted rule", text: t.rule }) : null,
        items.length ? null : el("p", { class: "muted", text: t ? "no touchpoints in this stage" : "" }),
        el("ol", { class: "touchpoints", "data-count": String(items.length) }, items.map((tp) => {
          const s = sessionsById[tp.session_id] || {};
          return el("li", { class: `tp kind-${tp.kind}`, "data-kind": tp.kind, style: { "--channel": channelColor(tp.channel) } },
            el("div", { class: "tp-head" },
              el("span", { class: "tp-kind", text: KIND_LABELS[tp.kind] || tp.kind }),
              el("time", { text: fmtTime(tp.timestamp) })),
            el("div", { class: "tp-what", text: tp.event || tp.page_path || "" }),
            el("div", { class: "tp-meta" },
              el("span", { class: "chip small", style: { background: channelColor(tp.channel), color: "#fff" }, text: tp.channel || "Direct" }),
              tp.campaign ? el("span", { class: "muted", text: ` ${tp.campaign}` }) : null,
              s.device ? el("span", { class: "muted", text: ` · ${s.device}` }) : null));
        })),
      ));
    });

    // timeline: x = time, y = stage, colour = channel
    const points = touchpoints.map((tp) => ({ x: parseTime(tp.timestamp), y: tp.stage || "Awareness", tp }));
    chart("timeline-chart", {
      type: "scatter",
      data: {
        datasets: [{
          label: "touchpoints", data: points,
          pointBackgroundColor: points.map((p) => channelColor(p.tp.channel)),
          // a star is drawn with lines only: give it the channel colour and a thick stroke
          pointBorderColor: points.map((p) => (p.tp.kind === "conversion" ? channelColor(p.tp.channel) : "#fff")),
          pointBorderWidth: points.map((p) => (p.tp.kind === "conversion" ? 3 : 1.5)),
          pointRadius: points.map((p) => (p.tp.kind === "conversion" ? 10 : p.tp.kind === "session_start" ? 7 : 5)),
          pointStyle: points.map((p) => (p.tp.kind === "conversion" ? "star" : p.tp.kind === "session_start" ? "circle" : "rectRounded")),
          showLine: true, borderColor: "rgba(113,128,150,0.35)", borderWidth: 1.5,
        }, {
          label: "stage entered",
          data: transitions.map((t) => ({ x: parseTime(t.entered_at), y: t.stage, t })),
          pointStyle: "triangle", pointRadius: 8, pointHoverRadius: 10,
          pointBackgroundColor: transitions.map((t) => STAGE_COLORS[t.stage] || "#a0aec0"),
          pointBorderColor: "#fff", pointBorderWidth: 1, showLine: false,
        }],
      },
      options: {
        maintainAspectRatio: false,
        plugins: {
          legend: { display: true, position: "bottom", labels: { usePointStyle: true, boxWidth: 8,
            generateLabels: () => [
              { text: "visit", pointStyle: "circle", fillStyle: "#a0aec0", strokeStyle: "#a0aec0" },
              { text: "interaction", pointStyle: "rectRounded", fillStyle: "#a0aec0", strokeStyle: "#a0aec0" },
              { text: "conversion", pointStyle: "star", fillStyle: "#a0aec0", strokeStyle: "#718096" },
              { text: "stage entered", pointStyle: "triangle", fillStyle: "#a0aec0", strokeStyle: "#a0aec0" },
            ] } },
          tooltip: { callbacks: { label: (item) => {
            if (item.raw.t) return `${fmtTime(item.raw.t.entered_at)} entered ${item.raw.t.stage} (${item.raw.t.rule})`;
            const tp = item.raw.tp;
            return `${fmtTime(tp.timestamp)} ${KIND_LABELS[tp.kind] || tp.kind}: ${tp.event || tp.page_path} (${tp.channel})`;
          } } },
        },
        scales: {
          x: { type: "linear", ticks: { callback: (v) => fmtTime(v), maxTicksLimit: 6 } },
          y: { type: "category", labels: [...STAGES].reverse(), offset: true, grid: { color: "#edf2f7" } },
        },
      },
    });
    emptyNote("timeline-chart", points.length ? "" : "No touchpoints.");

    $("sessions").tBodies[0].replaceChildren(...sessions.map((s) => el("tr", { "data-session": s.session_id },
      el("td", { text: fmtTime(s.start) }),
      el("td", { text: [s.device, s.browser, s.os].filter(Boolean).join(" · ") }),
      el("td", {}, el("span", { class: "chip small", style: { background: channelColor(s.channel), color: "#fff" }, text: s.channel })),
      el("td", { text: [s.source, s.medium].filter(Boolean).join(" / ") }),
      el("td", { text: s.campaign || "" }),
      el("td", { class: "mono", text: `${s.landing_page || ""} → ${s.exit_page || ""}` }),
      el("td", { text: fmtInt(s.pageviews) }),
      el("td", { text: fmtDuration(s.duration_s) }),
      el("td", { text: s.converted ? "✓" : "" }))));
  }

  // ---- interests and accounts -------------------------------------------------------------------

  const INTEREST_LABELS = {
    content_group: "content", section: "section", product_category: "category", product: "product",
    search: "search", campaign_term: "campaign term",
  };

  function interestChips(interests) {
    const list = interests || [];
    return el("div", { class: "interests", "data-interests": String(list.length) },
      el("h3", { text: "Interests" }),
      list.length ? el("div", { class: "chips" }, list.map((i) => el("span", {
        class: "chip interest", "data-kind": i.kind, "data-value": i.value,
        title: `${INTEREST_LABELS[i.kind] || i.kind} · score ${Number(i.score).toFixed(2)} · ${fmtInt(i.events)} events`,
      }, el("span", { class: "muted", text: `${INTEREST_LABELS[i.kind] || i.kind}: ` }), i.value)))
        : el("p", { class: "muted", text: "none yet" }));
  }

  function accountLinks(pairs) {
    if (!pairs.length) return null;
    return el("div", { class: "accounts" }, el("h3", { text: "Accounts" }), el("div", { class: "chips" },
      pairs.map(([id, label]) => el("a", { class: "chip account-link", href: `/map?account=${encodeURIComponent(id)}`, "data-account": id, text: label }))));
  }

  async function accountView(id) {
    $("account-view").hidden = false;
    $("nav").replaceChildren(el("a", { href: "/map", text: "Whole site" }), el("span", { text: " / account " }),
      el("span", { text: id }));
    const a = await get(`/v1/accounts/${encodeURIComponent(id)}`);
    const p = a.profile || {};
    const company = p.company || {};
    const title = company.name || p.name || p.domain || a.account_id;
    document.title = `${title} · account · trailmark`;
    const contacts = a.contacts || [];
    const touchpoints = a.touchpoints || [];
    $("account-profile").replaceChildren(
      el("div", { class: "who" },
        el("h2", { text: title }),
        el("p", { class: "muted mono", text: `${a.account_id} (${a.source === "domain" ? "company domain" : "group"})` }),
        el("p", {}, [p.domain, company.country, company.employees ? `${company.employees} employees` : ""].filter(Boolean).join(" · ")),
        company.description ? el("p", { class: "muted", text: company.description }) : null),
      el("dl", { class: "facts" },
        el("div", {}, el("dt", { text: "stage now" }), el("dd", { "data-stage-now": a.stage, style: { color: STAGE_COLORS[a.stage] || "inherit" }, text: a.stage || "—" })),
        el("div", {}, el("dt", { text: "contacts" }), el("dd", { "data-contacts": String(a.contacts_total), text: fmtInt(a.contacts_total) })),
        el("div", {}, el("dt", { text: "touchpoints" }), el("dd", { text: fmtInt(touchpoints.length) }))),
      interestChips(a.interests),
      accountLinks((a.related_accounts || []).map((r) => [r, r])),
    );
    $("account-contacts").tBodies[0].replaceChildren(...contacts.map((c) => el("tr", { "data-contact": c.contact_id },
      el("td", {}, el("a", { href: `/map?contact=${encodeURIComponent(c.contact_id)}`, text: [c.first_name, c.last_name].filter(Boolean).join(" ") || c.contact_id })),
      el("td", { text: c.email || "" }),
      el("td", { style: { color: STAGE_COLORS[c.stage] || "inherit" }, text: c.stage || "—" }),
      el("td", { text: fmtInt(c.devices) }),
      el("td", { text: fmtInt(c.sessions) }),
      el("td", { text: fmtTime(c.last_seen) }))));
    $("account-journey").tBodies[0].replaceChildren(...touchpoints.map((t) => el("tr", { "data-kind": t.kind, "data-contact": t.contact_id },
      el("td", { text: fmtTime(t.timestamp) }),
      el("td", { class: "mono", text: t.contact_id }),
      el("td", {}, el("span", { class: `chip small kind-${t.kind}`, text: KIND_LABELS[t.kind] || t.kind })),
      el("td", { text: t.event || t.page_path || "" }),
      el("td", {}, el("span", { class: "chip small", style: { background: channelColor(t.channel), color: "#fff" }, text: t.channel || "Direct" })),
      el("td", { style: { color: STAGE_COLORS[t.stage] || "inherit" }, text: t.stage || "" }))));
    $("account-journey-note").textContent = a.touchpoints_truncated ? "Only the latest touchpoints are shown." : "";
  }

  // ---- start -------------------------------------------------------------------------------------

  async function guard(promise) {
    try {
      await promise;
      showError("");
      return true;
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        sessionStorage.removeItem(KEY_STORE);
        askForKey(`That key does not work here (${err.message}). Paste the site's read key.`);
      } else {
        showError(err instanceof ApiError && err.status === 404 ? `Not found: ${err.message}` : String(err.message || err));
        document.body.dataset.state = "error";
      }
      return false;
    }
  }

  async function start() {
    takeKeyFromUrl();
    if (window.Chart) {
      window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
      window.Chart.defaults.color = "#4a5568";
      if (window.matchMedia("(prefers-reduced-motion: reduce)").matches) window.Chart.defaults.animation = false;
    }
    $("key-form").onsubmit = (e) => {
      e.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORE, key);
      $("key-input").value = "";
      location.reload();
    };
    $("forget-key").onclick = () => { sessionStorage.removeItem(KEY_STORE); askForKey(""); };
    $("contact-form").onsubmit = (e) => {
      e.preventDefault();
      const c = $("contact-input").value.trim();
      if (c.startsWith("domain:")) location.href = `/map?account=${encodeURIComponent(c)}`;
      else if (c) location.href = `/map?contact=${encodeURIComponent(c)}`;
    };
    if (!readKey()) { askForKey(""); return; }
    $("forget-key").hidden = false;
    const contact = params.get("contact");
    const account = params.get("account");
    if (contact) $("contact-input").value = contact;
    const ok = await guard(account ? accountView(account) : contact ? contactView(contact) : siteView());
    if (ok) document.body.dataset.state = "ready";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
