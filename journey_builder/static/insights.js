/* trailmark journey-method sections of the journey map page: the stage KPI band with its weekly trend
 * and NPS/CSAT (GET /v1/kpis), personas side by side (GET /v1/personas, up to three), cohort
 * retention as a triangle (GET /v1/retention) and moments of truth (GET /v1/moments).
 * Its own file, loaded after map.js: it adds its sections to the site view once the page is ready
 * (body[data-state=ready], the read key in sessionStorage). Text from the API goes in with
 * textContent only. */
(function () {
  "use strict";

  const KEY_STORE = "trailmark.readKey";  // where map.js keeps the read key
  const $ = (id) => document.getElementById(id);
  const STAGE_COLOURS = ["#4c6fff", "#38b2ac", "#ed8936", "#9f7aea", "#e53e3e"];
  let loaded = false;
  let personaNames = [];
  let trendChart = null;

  function node(tag, text, cls) {
    const n = document.createElement(tag);
    if (text !== undefined && text !== null) n.textContent = String(text);
    if (cls) n.className = cls;
    return n;
  }
  const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * Number(x)).toFixed(1)}%`);
  const hours = (h) => (h === null || h === undefined ? "–" : h < 48 ? `${Number(h).toFixed(1)} h` : `${(h / 24).toFixed(1)} d`);
  const num = (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en"));

  async function api(path) {
    const r = await fetch(path, {
      headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY_STORE) || ""}` }, cache: "no-store",
    });
    if (!r.ok) {
      let detail = "";
      try { detail = (await r.json()).detail || ""; } catch (e) { /* not JSON */ }
      throw new Error(`${r.status} ${typeof detail === "string" ? detail : ""}`.trim());
    }
    return r.json();
  }

  function personaSelect(id, label, withAll) {
    const s = node("select");
    s.id = id;
    s.setAttribute("aria-label", label);
    if (withAll) s.append(new Option("all personas", ""));
    for (const name of personaNames) s.append(new Option(name, name));
    return s;
  }

  function panel(id, title, sub, controls) {
    const sec = node("section", null, "panel insights");
    sec.id = id;
    const head = node("div", null, "panel-head");
    head.append(node("h2", title));
    if (controls) head.append(controls);
    head.append(node("p", sub, "sub"));
    sec.append(head);
    return sec;
  }

  function form(id, fields, onSubmit) {
    const f = node("form", null, "controls");
    f.id = id;
    f.append(...fields, node("button", "Update"));
    f.addEventListener("submit", (ev) => { ev.preventDefault(); onSubmit(); });
    return f;
  }

  function input(id, label, placeholder, value) {
    const i = node("input");
    i.id = id;
    i.setAttribute("aria-label", label);
    i.placeholder = placeholder;
    if (value) i.value = value;
    return i;
  }

  function options(id, label, pairs) {
    const s = node("select");
    s.id = id;
    s.setAttribute("aria-label", label);
    for (const [value, text] of pairs) s.append(new Option(text, value));
    return s;
  }

  function failed(box, err) {
    box.replaceChildren(node("p", `could not load: ${err.message}`, "error"));
  }

  /* ---- stage KPIs ---- */
  async function loadKpis() {
    const box = $("kpi-band");
    const q = new URLSearchParams({ weeks: $("kpi-weeks").value });
    if ($("kpi-persona").value) q.set("persona", $("kpi-persona").value);
    let k;
    try { k = await api(`/v1/kpis?${q}`); } catch (err) { failed(box, err); return; }
    box.replaceChildren();
    for (const s of k.stages) {
      const card = node("div", null, "kpi");
      card.dataset.stage = s.stage;
      card.append(node("h3", s.stage));
      const dl = node("dl");
      const rows = [
        ["entered", num(s.entered)], ["moved on", `${num(s.moved_on)} (${pct(s.conversion_rate)})`],
        ["drop-off", num(s.drop_off)], ["median in stage", hours(s.median_hours_in_stage)],
        ["p90 in stage", hours(s.p90_hours_in_stage)], ["revenue", num(s.revenue)],
        ["repeat buyers", pct(s.repeat_purchase_rate)],
      ];
      for (const [t, v] of rows) dl.append(node("dt", t), node("dd", v));
      card.append(dl);
      box.append(card);
    }
    const fb = $("kpi-feedback");
    const n = k.feedback.nps, c = k.feedback.csat;
    fb.replaceChildren(
      node("span", `NPS ${n.nps === null ? "–" : n.nps} (${num(n.answers)} answers)`, "chip"),
      node("span", `CSAT ${c.csat === null ? "–" : `${c.csat}%`} (${num(c.answers)} answers)`, "chip"),
      node("span", `revenue ${num(k.totals.revenue)} · ${num(k.totals.purchases)} purchases · repeat ${pct(k.totals.repeat_purchase_rate)}`, "chip"),
    );
    for (const r of n.by_stage.concat(n.by_channel, n.by_persona)) {
      fb.append(node("span", `NPS ${r.stage || r.channel || r.persona}: ${r.nps} (${r.answers})`, "chip muted"));
    }
    if (trendChart) trendChart.destroy();
    trendChart = new window.Chart($("kpi-chart"), {
      type: "line",
      data: {
        labels: k.weeks,
        datasets: k.stages.map((s, i) => ({
          label: `${s.stage} entered`, data: s.trend.map((w) => w.entered),
          borderColor: STAGE_COLOURS[i], backgroundColor: STAGE_COLOURS[i], tension: 0.25,
        })),
      },
      options: { animation: false, maintainAspectRatio: false, plugins: { legend: { position: "bottom" } },
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
    document.body.dataset.kpis = "ready";
  }

  /* ---- personas side by side ---- */
  async function loadPersonas() {
    const box = $("persona-columns");
    const chosen = [...new Set(["persona-a", "persona-b", "persona-c"].map((id) => $(id).value).filter(Boolean))];
    const q = new URLSearchParams();
    if (chosen.length) q.set("compare", chosen.join(","));
    let data;
    try { data = await api(`/v1/personas?${q}`); } catch (err) { failed(box, err); return; }
    box.replaceChildren();
    for (const p of data.personas) {
      const col = node("div", null, "persona");
      col.dataset.persona = p.name;
      col.append(node("h3", p.name), node("p", p.description, "sub"));
      const dl = node("dl");
      for (const [t, v] of [["contacts", num(p.contacts)], ["converted", `${num(p.converted)} (${pct(p.conversion_rate)})`],
        ["median time to convert", hours(p.median_hours_to_convert)]]) dl.append(node("dt", t), node("dd", v));
      col.append(dl, node("h4", "stage now"));
      col.append(bars(p.stages, p.contacts), node("h4", "first channel"), bars(p.channels, p.contacts));
      box.append(col);
    }
    document.body.dataset.personas = "ready";
  }

  function bars(counts, total) {
    const list = node("ul", null, "bars");
    for (const [k, v] of Object.entries(counts).sort((a, b) => b[1] - a[1]).slice(0, 6)) {
      const li = node("li");
      const bar = node("span", null, "bar");
      bar.style.setProperty("--w", `${total ? (100 * v) / total : 0}%`);
      li.append(node("span", k || "(none)", "label"), bar, node("span", num(v), "n"));
      list.append(li);
    }
    return list;
  }

  /* ---- cohort retention ---- */
  async function loadRetention() {
    const box = $("retention-table");
    const q = new URLSearchParams({ cohort: $("retention-cohort").value, periods: $("retention-periods").value });
    for (const [id, key] of [["retention-by", "by"], ["retention-start", "start_event"], ["retention-return", "return_event"],
      ["retention-persona", "persona"]]) if ($(id).value.trim()) q.set(key, $(id).value.trim());
    let data;
    try { data = await api(`/v1/retention?${q}`); } catch (err) { failed(box, err); return; }
    const table = node("table", null, "table triangle");
    const head = node("tr");
    head.append(node("th", "cohort"));
    if (data.by) head.append(node("th", data.by));
    head.append(node("th", "contacts"));
    for (let i = 0; i < data.periods; i++) head.append(node("th", `${data.cohort} ${i}`));
    const thead = node("thead");
    thead.append(head);
    const body = node("tbody");
    for (const r of data.rows) {
      const tr = node("tr");
      tr.append(node("td", r.cohort));
      if (data.by) tr.append(node("td", r.group));
      tr.append(node("td", num(r.size), "num"));
      r.rate.forEach((rate, i) => {
        const td = node("td", rate === null ? "" : pct(rate), rate === null ? "future" : "cell");
        if (rate !== null) {
          td.style.setProperty("--a", (0.08 + 0.85 * rate).toFixed(3));
          td.title = `${r.retained[i]} of ${r.size}`;
        }
        tr.append(td);
      });
      body.append(tr);
    }
    table.append(thead, body);
    box.replaceChildren(data.rows.length ? table : node("p", "no contacts in these cohorts yet", "sub"));
    document.body.dataset.retention = "ready";
  }

  /* ---- moments of truth ---- */
  async function loadMoments(fresh) {
    const box = $("moments-list");
    const q = new URLSearchParams({ limit: "10" });
    if (fresh === true) q.set("fresh", "true");  // computed now, not the kept answer
    if ($("moments-conversion").value.trim()) q.set("conversion", $("moments-conversion").value.trim());
    if ($("moments-support").value.trim()) q.set("min_support", $("moments-support").value.trim());
    if ($("moments-persona").value) q.set("persona", $("moments-persona").value);
    let data;
    try { data = await api(`/v1/moments?${q}`); } catch (err) { failed(box, err); return; }
    box.replaceChildren();
    if (!data.stages.length) {
      box.append(node("p", `no moment has ${data.min_support} contacts yet (minimum support)`, "sub"));
    }
    for (const s of data.stages) {
      const col = node("div", null, "moment-stage");
      col.append(node("h3", s.stage));
      const ol = node("ol", null, "moments");
      for (const m of s.moments) {
        const li = node("li");
        li.dataset.kind = m.kind;
        li.append(node("span", m.kind, "kind"), node("span", m.name, "name"),
          node("span", `× ${m.lift.toFixed(2)}`, m.ci_low > 1 ? "lift up" : m.ci_high < 1 ? "lift down" : "lift"),
          node("span", `${(100 * data.confidence).toFixed(0)}% CI ${m.ci_low.toFixed(2)}–${m.ci_high.toFixed(2)}` +
            ` · ${m.with_converted}/${m.with} vs ${m.without_converted}/${m.without}`, "sub"));
        ol.append(li);
      }
      col.append(ol);
      box.append(col);
    }
    const at = node("p", `computed ${data.computed_at.slice(0, 16).replace("T", " ")} UTC`, "sub moments-at");
    const again = node("button", "compute now", "link");
    again.type = "button";
    again.addEventListener("click", () => {
      delete document.body.dataset.moments;
      loadMoments(true);
    });
    at.append(" ", again);
    box.append(at);
    document.body.dataset.moments = "ready";
  }

  function build() {
    const main = $("site-view");
    const anchor = $("clickmap") || null;
    const add = (sec) => main.insertBefore(sec, anchor);  // in the document before $() can find its parts
    const kpis = panel("kpis", "Stage KPIs",
      "Per stage over the last weeks: contacts that entered, moved on to a later stage, time in stage, revenue of " +
      "purchases made in the stage and repeat buyers; NPS and CSAT answers. The chart: contacts entering each stage per week.",
      form("kpi-form", [options("kpi-weeks", "Weeks", [["4", "4 weeks"], ["12", "12 weeks"], ["26", "26 weeks"], ["52", "52 weeks"]]),
        personaSelect("kpi-persona", "Persona", true)], loadKpis));
    const band = node("div", null, "kpi-band");
    band.id = "kpi-band";
    const fb = node("div", null, "chips");
    fb.id = "kpi-feedback";
    const chartBox = node("div", null, "chart");
    const canvas = node("canvas");
    canvas.id = "kpi-chart";
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", "Contacts entering each stage per week");
    chartBox.append(canvas);
    kpis.append(band, fb, chartBox);
    add(kpis);
    $("kpi-weeks").value = "12";

    const persons = panel("personas", "Personas side by side",
      "Up to three personas (journey_builder/personas.toml): contacts, conversion, time to convert, where they are " +
      "now and how they first came.",
      form("persona-form", [personaSelect("persona-a", "First persona", true), personaSelect("persona-b", "Second persona", true),
        personaSelect("persona-c", "Third persona", true)], loadPersonas));
    const cols = node("div", null, "persona-columns");
    cols.id = "persona-columns";
    persons.append(cols);
    add(persons);
    personaNames.slice(0, 3).forEach((name, i) => { $(["persona-a", "persona-b", "persona-c"][i]).value = name; });

    const retention = panel("retention", "Cohort retention",
      "Contacts by the week or month of their first start event, and the share back (return event) in each later " +
      "period. Empty cells: the period has not ended yet.",
      form("retention-form", [
        options("retention-cohort", "Cohort", [["week", "weekly"], ["month", "monthly"]]),
        options("retention-periods", "Periods", [["6", "6 periods"], ["8", "8 periods"], ["12", "12 periods"]]),
        options("retention-by", "Split by", [["", "all contacts"], ["channel", "by first channel"], ["persona", "by persona"]]),
        input("retention-start", "Start event", "start: any event"),
        input("retention-return", "Return event", "return: any event"),
        personaSelect("retention-persona", "Persona", true)], loadRetention));
    add(retention);
    $("retention-periods").value = "8";
    const tableBox = node("div", null, "triangle-box");
    tableBox.id = "retention-table";
    retention.append(tableBox);

    const moments = panel("moments", "Moments of truth",
      "Pages, events and arrival channels that most raise the chance of converting, per stage: lift = conversion " +
      "rate with / without, with its confidence interval and the counts behind it.",
      form("moments-form", [input("moments-conversion", "Conversion events", "conversion: the configured ones"),
        input("moments-support", "Minimum support", "min. contacts: setting"),
        personaSelect("moments-persona", "Persona", true)], loadMoments));
    const list = node("div", null, "moments-grid");
    list.id = "moments-list";
    moments.append(list);
    add(moments);
  }

  async function start() {
    if (loaded || document.body.dataset.state !== "ready" || !$("site-view") || $("site-view").hidden) return;
    loaded = true;
    try {
      personaNames = (await api("/v1/personas")).personas.map((p) => p.name);
    } catch (err) {
      personaNames = [];
    }
    build();
    await Promise.all([loadKpis(), loadPersonas(), loadRetention(), loadMoments()]);
  }

  document.addEventListener("DOMContentLoaded", () => {
    start();
    new MutationObserver(start).observe(document.body, { attributes: true, attributeFilter: ["data-state"] });
  });
})();
