// columnar-delivery dashboard: polls the JSON twins of each page and redraws.
// Everything from the server goes in through textContent, never innerHTML.
"use strict";
(function () {
  const body = document.body;
  const page = body.dataset.page;
  const POLL = parseFloat(body.dataset.poll || "1.5") * 1000;
  const CSRF = body.dataset.csrfHeader || "X-Delivery-CSRF";
  const FINAL = (body.dataset.final || "").split(",");
  const liveDot = document.getElementById("live");

  // -- formatting (mirrors api/dashboard.py) --------------------------------
  const count = (n) => (n === null || n === undefined ? "" : Math.round(n).toLocaleString("en-US"));
  function nbytes(n) {
    if (n === null || n === undefined) return "";
    const units = ["B", "kB", "MB", "GB", "TB"];
    for (const u of units) {
      if (Math.abs(n) < 1000 || u === "TB") return u === "B" ? `${n.toFixed(0)} B` : `${n.toFixed(1)} ${u}`;
      n /= 1000;
    }
    return "";
  }
  function rate(n) {
    if (!n) return "–";
    if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M/s`;
    if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k/s`;
    return `${n.toFixed(0)} /s`;
  }
  function age(s) {
    if (s === null || s === undefined) return "";
    s = Math.floor(s);
    const pad = (x) => String(x).padStart(2, "0");
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }
  const slug = (s) => String(s).toLowerCase().replace(/ /g, "-");

  // el("td", {class: "num"}, "text", childNode, ...)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const badge = (cls, text) => el("span", { class: `badge ${cls}` }, text);
  const $ = (id) => document.getElementById(id);

  // -- HTTP -------------------------------------------------------------------
  function toLogin() {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }
  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (r.status === 401) { toLogin(); throw new Error("login needed"); }
    if (r.status === 404) return null;
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.json();
  }
  // State-changing calls: the CSRF header proves they come from this page's script.
  async function send(method, url) {
    const r = await fetch(url, { method, credentials: "same-origin",
      headers: { Accept: "application/json", [CSRF]: "1" } });
    let answer = {};
    try { answer = await r.json(); } catch (e) { /* not JSON */ }
    if (r.status === 401) { toLogin(); }
    if (!r.ok) {
      const id = answer.correlation_id ? ` (correlation id ${answer.correlation_id})` : "";
      throw new Error((answer.message || `HTTP ${r.status}`) + id);
    }
    return answer;
  }
  // Calls fn every POLL ms (not while the tab is hidden) until it returns false.
  function poll(fn) {
    async function tick() {
      if (!document.hidden) {
        try {
          const more = await fn();
          liveDot.className = "live on";
          if (more === false) { liveDot.className = "live"; return; }
        } catch (err) {
          liveDot.className = "live off";
          liveDot.title = String(err);
        }
      }
      setTimeout(tick, POLL);
    }
    setTimeout(tick, POLL);
  }

  // -- requests page ------------------------------------------------------------
  function requestRow(q) {
    const who = document.querySelector("header .who").textContent.includes("(admin)") && q.owner ? ` · ${q.owner}` : "";
    return el("tr", { "data-id": q.request_id },
      el("td", {}, el("a", { href: `/requests/${q.request_id}` }, q.title || q.request_id.slice(0, 8)),
        el("div", { class: "sub" }, `${q.request_id.slice(0, 8)} · ${q.did.length > 60 ? q.did.slice(0, 57) + "..." : q.did}${who}`)),
      el("td", {}, badge(`s-${slug(q.status)}`, q.status)),
      el("td", { class: "num" }, `${q.completed} / ${q.files}`),
      el("td", { class: "num" + (q.failed ? " bad" : "") }, q.failed),
      el("td", { class: "num" }, q.remaining),
      el("td", { class: "num" }, count(q.events)),
      el("td", { class: "num" }, nbytes(q.bytes)),
      el("td", { class: "num" }, rate(q.rate)),
      el("td", { class: "num" }, age(q.age)));
  }
  function requestsPage() {
    const select = $("status");
    async function refresh() {
      const status = select.value;
      const data = await getJSON("/dashboard/api/requests" + (status ? `?status=${encodeURIComponent(status)}` : ""));
      const tbody = document.querySelector("#requests tbody");
      const rows = data.requests.map(requestRow);
      if (!rows.length) rows.push(el("tr", { class: "empty" }, el("td", { colSpan: 9 }, `No requests${status ? " with status " + status : ""}.`)));
      tbody.replaceChildren(...rows);
    }
    select.addEventListener("change", () => {
      const url = select.value ? `/?status=${encodeURIComponent(select.value)}` : "/";
      history.replaceState(null, "", url);
      refresh().catch(() => {});
    });
    poll(refresh);
  }

  // -- request page -------------------------------------------------------------
  function svg(tag, attrs, text) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  // Cumulative events read over time (line), and the rate per interval (bars).
  function drawPlot(r) {
    const plot = $("plot");
    const W = Math.max(plot.clientWidth || 800, 300), H = 220, L = 64, R = 64, T = 26, B = 26;
    plot.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const pts = r.series || [[0, 0, 0]];
    const tEnd = Math.max(r.elapsed || 0, pts[pts.length - 1][0], 1);
    const yMax = Math.max(pts[pts.length - 1][1], 1);
    const x = (t) => L + (t / tEnd) * (W - L - R);
    const y = (v, max) => H - B - (v / max) * (H - T - B);
    const nodes = [];
    for (let i = 0; i <= 4; i++) {
      const yy = T + (i * (H - T - B)) / 4;
      nodes.push(svg("line", { class: "grid-line", x1: L, x2: W - R, y1: yy, y2: yy }));
    }
    const bins = Math.min(30, Math.max(4, Math.round(pts.length / 3)));  // ~3 files a bar
    const width = tEnd / bins;
    const perBin = new Array(bins).fill(0);
    for (let i = 1; i < pts.length; i++) {
      const b = Math.min(bins - 1, Math.floor(pts[i][0] / width));
      perBin[b] += pts[i][1] - pts[i - 1][1];
    }
    const rates = perBin.map((e) => e / width);
    const rMax = Math.max(...rates, 1);
    rates.forEach((v, b) => {
      if (!v) return;
      nodes.push(svg("rect", { class: "bar-rate", x: x(b * width) + 1, width: Math.max(x(width) - L - 2, 1),
        y: y(v, rMax), height: H - B - y(v, rMax) }));
    });
    let d = `M ${x(0)} ${y(0, yMax)}`;
    for (let i = 1; i < pts.length; i++) d += ` L ${x(pts[i][0])} ${y(pts[i - 1][1], yMax)} L ${x(pts[i][0])} ${y(pts[i][1], yMax)}`;
    const final = FINAL.includes(r.status);
    const tLast = final ? pts[pts.length - 1][0] : tEnd;
    d += ` L ${x(tLast)} ${y(pts[pts.length - 1][1], yMax)}`;
    nodes.push(svg("path", { class: "area", d: `${d} L ${x(tLast)} ${y(0, yMax)} Z` }));
    nodes.push(svg("path", { class: "line", d }));
    nodes.push(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    nodes.push(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    nodes.push(svg("text", { x: L - 6, y: T + 4, "text-anchor": "end" }, count(yMax)));
    nodes.push(svg("text", { x: L - 6, y: H - B, "text-anchor": "end" }, "0"));
    nodes.push(svg("text", { x: W - R + 6, y: T + 4 }, rate(rMax)));
    for (let i = 0; i <= 4; i++) {
      const t = (i * tEnd) / 4;
      nodes.push(svg("text", { x: x(t), y: H - 8, "text-anchor": i ? (i === 4 ? "end" : "middle") : "start" },
        tEnd < 10 ? `${t.toFixed(1)}s` : age(t)));
    }
    nodes.push(svg("text", { x: L, y: 12 }, "line: events read so far (left axis)   bars: events read per second (right axis)"));
    plot.replaceChildren(...nodes);
  }
  function fileRow(f) {
    return el("tr", { "data-status": f.status },
      el("td", { class: "num" }, f.file_id), el("td", { class: "path" }, f.path || ""),
      el("td", {}, badge(`f-${f.status}`, f.status)),
      el("td", { class: "num" }, f.seconds === null ? "" : `${f.seconds.toFixed(2)} s`),
      el("td", { class: "num" }, count(f.events)), el("td", { class: "num" }, nbytes(f.bytes)),
      el("td", { class: "error-text" }, f.error || ""));
  }
  function renderRequest(r) {
    const status = $("r-status");
    status.textContent = r.status;
    status.className = `badge big s-${slug(r.status)}`;
    $("cancel").hidden = FINAL.includes(r.status);
    const info = $("r-info");
    info.textContent = r.failure_info || "";
    info.hidden = !r.failure_info;
    const total = r.files || 1;
    const bar = $("progress");
    bar.querySelector(".done").style.width = `${(100 * r.completed) / total}%`;
    bar.querySelector(".failed").style.width = `${(100 * r.failed) / total}%`;
    bar.setAttribute("aria-valuenow", r.completed + r.failed);
    $("progress-text").textContent = `${r.completed} of ${r.files} files done, ${r.failed} failed, ${r.remaining} remaining`;
    $("r-events").textContent = count(r.events);
    $("r-events-in").textContent = count(r.events_in);
    $("r-bytes").textContent = nbytes(r.bytes);
    $("r-rate").textContent = rate(r.rate);
    $("r-elapsed").textContent = age(r.elapsed);
    const failed = r.files_table.filter((f) => f.status === "failure");
    $("failures").hidden = !failed.length;
    $("failure-list").replaceChildren(...failed.map((f) => el("li", {},
      el("span", { class: "path" }, `#${f.file_id} ${f.path || ""}`), el("div", { class: "error-text" }, f.error || ""))));
    const want = $("file-filter").value;
    const rows = r.files_table.filter((f) => !want || f.status === want).map(fileRow);
    document.querySelector("#files tbody").replaceChildren(...rows);
    drawPlot(r);
  }
  function requestPage() {
    const id = document.querySelector(".actions").dataset.id;
    let current = JSON.parse($("initial").textContent);
    const say = (text) => { const m = $("r-action"); m.textContent = text; m.hidden = !text; };
    async function refresh() {
      const r = await getJSON(`/dashboard/api/requests/${id}`);
      if (r === null) { say("This request no longer exists."); return false; }
      current = r;
      renderRequest(r);
      return !FINAL.includes(r.status);
    }
    renderRequest(current);
    $("file-filter").addEventListener("change", () => renderRequest(current));
    $("cancel").addEventListener("click", async () => {
      if (!window.confirm(`Cancel request ${id.slice(0, 8)}? Files not yet transformed will not be.`)) return;
      try { say((await send("POST", `/servicex/transformation/${id}/cancel`)).message); await refresh(); }
      catch (err) { say(`Cancel failed: ${err.message}`); }
    });
    $("delete").addEventListener("click", async () => {
      if (!window.confirm(`Delete request ${id.slice(0, 8)}, its results and its outputs? This cannot be undone.`)) return;
      try { await send("DELETE", `/servicex/transformation/${id}`); location.href = "/"; }
      catch (err) { say(`Delete failed: ${err.message}`); }
    });
    $("copy").addEventListener("click", async () => {
      const text = $("snippet").textContent;
      try { await navigator.clipboard.writeText(text); }
      catch (e) {  // no clipboard API (plain http on another host): select it instead
        const range = document.createRange();
        range.selectNodeContents($("snippet"));
        const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
        document.execCommand("copy");
      }
      $("copy").textContent = "Copied";
      setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
    });
    if (!FINAL.includes(current.status)) poll(refresh);
  }

  // -- workers page -----------------------------------------------------------------
  function workerRow(w) {
    const state = !w.live ? "lost" : w.file ? "busy" : "idle";
    const on = w.file ? el("td", {}, w.request_id ? el("a", { href: `/requests/${w.request_id}` }, w.request_id.slice(0, 8)) : null,
      w.request_id ? ` #${w.file_id} ` : null, el("span", { class: "path" }, w.file)) : el("td", {}, "–");
    return el("tr", { "data-worker": w.worker },
      el("td", {}, w.worker, el("div", { class: "sub" }, `${w.kind} · pid ${w.pid || "–"}`)),
      el("td", {}, badge(`w-${state}`, state)), on,
      el("td", { class: "num" }, w.files_done),
      el("td", { class: "num" + (w.files_failed ? " bad" : "") }, w.files_failed),
      el("td", { class: "num" }, rate(w.events_per_second), el("div", { class: "sub" }, `${nbytes(w.bytes_per_second)}/s`)),
      el("td", { class: "error-text" }, w.last_error || ""),
      el("td", { class: "num" }, `${age(w.age)} ago`));
  }
  function workersPage() {
    poll(async () => {
      const v = await getJSON("/dashboard/api/workers");
      $("w-live").textContent = v.live;
      $("w-queue").textContent = v.queue_depth === null ? "?" : v.queue_depth;
      $("w-dead").textContent = v.dead_letters === null ? "?" : v.dead_letters;
      $("w-dead").className = "value" + (v.dead_letters ? " bad" : "");
      const rows = v.workers.map(workerRow);
      if (!rows.length) rows.push(el("tr", { class: "empty" }, el("td", { colSpan: 8 }, "No worker has sent a heartbeat yet.")));
      document.querySelector("#workers tbody").replaceChildren(...rows);
    });
  }

  if (page === "requests") requestsPage();
  else if (page === "request") requestPage();
  else if (page === "workers") workersPage();
})();
