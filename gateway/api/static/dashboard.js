// The gateway dashboard: polls /dashboard/data once a second and redraws tiles, charts and the
// engines panel. Every asset is served by the gateway itself.
"use strict";

(() => {
  const COLORS = {
    exact: "#34d399",
    semantic: "#38bdf8",
    miss: "#fbbf24",
    bypass: "#a78bfa",
    other: "#f87171",
    p50: "#38bdf8",
    p95: "#fbbf24",
    p99: "#f87171",
    ttft: "#34d399",
    tokens: "#a78bfa",
    cost: "#34d399",
    inflight: "#38bdf8",
    queue: "#fbbf24",
    rejected: "#f87171",
  };
  const BREAKER = ["closed", "half_open", "open"];
  let windowS = 300;
  let last = null;
  let failures = 0;
  let timer = 0;
  let polling = false;

  // -- formatting ---------------------------------------------------------------------------
  const num = (v, digits = 0) =>
    v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const compact = (v) => {
    if (v === null || v === undefined) return "–";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    return num(v, a < 10 && a % 1 ? 1 : 0);
  };
  const seconds = (v) => {
    if (v === null || v === undefined) return "–";
    if (v < 0.001) return (v * 1e6).toFixed(0) + " µs";
    if (v < 1) return (v * 1000).toFixed(v < 0.01 ? 1 : 0) + " ms";
    return v.toFixed(v < 10 ? 2 : 1) + " s";
  };
  const percent = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(v === 1 || v === 0 ? 0 : 1) + "%");
  const money = (v) => {
    if (v === null || v === undefined) return "–";
    return "$" + (v >= 100 ? num(v, 0) : v >= 1 ? v.toFixed(2) : v.toFixed(4));
  };
  const moneyTick = (v) => "$" + (v === 0 ? "0" : v < 0.01 ? v.toFixed(4) : v < 100 ? v.toFixed(2) : num(v, 0));
  const rate = (v) => (v === null || v === undefined ? "–" : v >= 10 ? v.toFixed(0) : v.toFixed(v >= 1 ? 1 : 2));
  const duration = (s) => {
    if (s < 60) return Math.floor(s) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + (Math.floor(s % 60) ? " " + Math.floor(s % 60) + "s" : "");
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  };
  const escape = (text) =>
    String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  // -- tiles --------------------------------------------------------------------------------
  function tile(id, value, display, sub) {
    const node = document.getElementById(id);
    node.dataset.value = value === null || value === undefined ? "" : String(value);
    node.querySelector(".value").textContent = display;
    node.querySelector(".sub").textContent = sub;
  }

  function renderTiles(d) {
    const s = d.summary || {};
    const engines = d.engines || [];
    const up = engines.filter((e) => e.healthy && e.breaker !== "open").length;
    tile("tile-hit-ratio", s.hit_ratio, percent(s.hit_ratio),
      `${compact(s.hits_exact)} exact · ${compact(s.hits_semantic)} semantic · ${compact(s.misses)} miss`);
    const a = d.audit;
    tile("tile-audit", a ? a.agreement_rate : null, a ? percent(a.agreement_rate) : "off",
      !a ? "cache.audit.sample_rate = 0"
        : a.audited ? `${percent(a.agreement_low)}–${percent(a.agreement_high)} · ${compact(a.audited)} audited · ${compact(a.skipped)} skipped · ${compact(a.capped)} capped`
          : `no audit yet · ${percent(a.sample_rate)} of semantic hits` +
            (a.max_per_minute ? `, at most ${num(a.max_per_minute)} a minute` : ""));
    tile("tile-rps", s.rps, rate(s.rps), `${compact(s.requests)} completions in all`);
    tile("tile-p95", s.p95, seconds(s.p95), `p50 ${seconds(s.p50)} · p99 ${seconds(s.p99)} (1 min)`);
    tile("tile-ttft", s.ttft_p50, seconds(s.ttft_p50), `p95 ${seconds(s.ttft_p95)} · streams, 1 min`);
    tile("tile-tokens", s.tokens_saved, compact(s.tokens_saved), `kept off the engines by ${compact(s.hits)} hits`);
    tile("tile-cost", s.cost_saved, money(s.cost_saved), `at $${d.price_per_1k_tokens} per 1k tokens`);
    tile("tile-engines", up, `${up}/${engines.length}`,
      `${num(s.in_flight)} in flight · ${num(s.queue_depth)} queued · ${num(s.rejected)} shed`);
    const engineTile = document.getElementById("tile-engines");
    engineTile.classList.toggle("bad", engines.length > 0 && up < engines.length);
  }

  // -- charts -------------------------------------------------------------------------------
  function renderCharts(d) {
    const s = d.series;
    const byCache = s.requests_by_cache;
    Charts.draw(document.getElementById("chart-rps"), {
      t: s.t, window: windowS, stacked: true,
      y: { label: "requests / s", format: rate, floor: 0.5 },
      series: [
        { key: "hit-exact", label: "hit · exact", color: COLORS.exact, values: byCache["hit-exact"], area: true },
        { key: "hit-semantic", label: "hit · semantic", color: COLORS.semantic, values: byCache["hit-semantic"], area: true },
        { key: "miss", label: "miss", color: COLORS.miss, values: byCache.miss, area: true },
        { key: "bypass", label: "bypass", color: COLORS.bypass, values: byCache.bypass, area: true },
        { key: "other", label: "rejected / failed", color: COLORS.other, values: byCache.other, area: true },
      ],
    });
    Charts.draw(document.getElementById("chart-hit"), {
      t: s.t, window: windowS,
      y: { label: "hit ratio (30 s)", format: percent, min: 0, max: 1 },
      series: [{ key: "hit_ratio", label: "hits / (hits + misses)", color: COLORS.exact, values: s.hit_ratio, area: true, fillOpacity: 0.18 }],
    });
    Charts.draw(document.getElementById("chart-latency"), {
      t: s.t, window: windowS,
      y: { label: "seconds (log)", format: seconds, log: true, min: 0.001 },
      series: [
        { key: "p50", label: "p50", color: COLORS.p50, values: s.p50 },
        { key: "p95", label: "p95", color: COLORS.p95, values: s.p95 },
        { key: "p99", label: "p99", color: COLORS.p99, values: s.p99 },
        { key: "ttft_p50", label: "TTFT p50 (streams)", color: COLORS.ttft, values: s.ttft_p50, dash: true },
      ],
    });
    Charts.draw(document.getElementById("chart-saved"), {
      t: s.t, window: windowS,
      y: { label: "tokens saved", format: compact },
      y2: { label: "cost saved", format: moneyTick, floor: 0.01 },
      series: [
        { key: "tokens_saved", label: "tokens", color: COLORS.tokens, values: s.tokens_saved, area: true, fillOpacity: 0.2 },
        { key: "cost_saved", label: "cost", color: COLORS.cost, values: s.cost_saved, axis: "right", dash: true },
      ],
    });
    Charts.draw(document.getElementById("chart-load"), {
      t: s.t, window: windowS,
      y: { label: "requests", format: (v) => num(v, v % 1 ? 1 : 0) },
      series: [
        { key: "in_flight", label: "in flight", color: COLORS.inflight, values: s.in_flight, area: true, fillOpacity: 0.2 },
        { key: "queue_depth", label: "queued", color: COLORS.queue, values: s.queue_depth },
        { key: "rejected_ps", label: "shed (429/s)", color: COLORS.rejected, values: s.rejected_ps, dash: true },
      ],
    });
  }

  // -- engines ------------------------------------------------------------------------------
  function lane(history) {
    if (!history) return "";
    const n = history.up.length;
    if (!n) return "";
    const w = 100 / n;
    let rects = "";
    for (let i = 0; i < n; i++) {
      const up = history.up[i];
      const state = BREAKER[history.breaker[i]] || null;
      const cls = up === null ? "gap" : !up ? "down" : state === "open" ? "open" : state === "half_open" ? "half" : "ok";
      rects += `<rect x="${(i * w).toFixed(3)}" width="${(w + 0.05).toFixed(3)}" height="10" class="${cls}"/>`;
    }
    return `<svg class="lane" viewBox="0 0 100 10" preserveAspectRatio="none">${rects}</svg>`;
  }

  function bar(fraction, label) {
    const f = Math.max(0, Math.min(1, fraction || 0));
    const cls = f > 0.9 ? "hot" : f > 0.7 ? "warm" : "";
    return `<div class="bar ${cls}"><span style="width:${(f * 100).toFixed(1)}%"></span></div><div class="bar-label">${label}</div>`;
  }

  function renderEngines(d) {
    const host = document.getElementById("engines");
    const rows = (d.engines || []).map((e) => {
      const health = e.healthy ? "up" : "down";
      const load = e.engine_load || {};
      const kv = load.kv_cache_usage;
      const retry = e.breaker === "open" && e.breaker_retry_in_s ? ` · retry in ${e.breaker_retry_in_s.toFixed(0)} s` : "";
      return `
        <div class="engine" data-url="${escape(e.url)}" data-health="${health}" data-breaker="${e.breaker}">
          <div class="engine-head">
            <span class="dot ${health}"></span>
            <span class="url">${escape(e.url)}</span>
            <span class="pill ${health}">${health}</span>
            <span class="pill breaker ${e.breaker}">breaker ${e.breaker.replace("_", "-")}${retry}</span>
          </div>
          <div class="engine-models">${(e.models || []).map((m) => `<span class="chip">${escape(m)}</span>`).join("")}</div>
          <div class="engine-stats">
            <div><div class="stat-name">in flight</div>${bar(e.in_flight / e.max_in_flight, `${e.in_flight} / ${e.max_in_flight}`)}</div>
            <div><div class="stat-name">KV cache</div>${kv === undefined || kv === null ? '<div class="bar-label muted">no engine metrics</div>' : bar(kv, percent(kv))}</div>
            <div><div class="stat-name">engine queue</div><div class="bar-label">${load.waiting === undefined ? "–" : num(load.waiting)} waiting · ${load.running === undefined ? "–" : num(load.running)} running</div></div>
            <div><div class="stat-name">prefix cache hits</div><div class="bar-label">${percent(load.prefix_cache_hit_ratio)}</div></div>
            <div><div class="stat-name">errors (breaker window)</div><div class="bar-label">${percent(e.breaker_error_ratio)}</div></div>
          </div>
          <div class="stat-name">health and breaker, last ${duration(windowS)}</div>
          ${lane((d.backends || {})[e.url])}
          ${e.last_error ? `<div class="error">${escape(e.last_error)}</div>` : ""}
        </div>`;
    });
    host.innerHTML = rows.join("") || '<div class="muted">No engines configured.</div>';
    const c = d.cache || {};
    document.getElementById("cache-line").textContent = c.enabled
      ? `cache: ${c.store}${c.store_available ? "" : " (unavailable)"} · ${c.entries === null ? "?" : compact(c.entries)} entries · embed ${c.embed_ms} ms/batch (mean batch ${c.embed_batch}) · ${num(c.store_errors)} store errors · ${c.counted_by === "cluster" ? `cluster of ${num(c.replicas_reporting)} replicas` : "this replica"}: ${num(c.hits)} hits, ${num(c.misses)} misses (${percent(c.hit_ratio)})`
      : "cache: disabled";
  }

  // -- loop ---------------------------------------------------------------------------------
  function render(d) {
    renderTiles(d);
    renderCharts(d);
    renderEngines(d);
    document.getElementById("version").textContent = "v" + d.version;
    document.getElementById("uptime").textContent = "up " + duration(d.now - d.started_at);
    document.getElementById("updated").textContent = "updated " + new Date(d.now * 1000).toTimeString().slice(0, 8);
    document.body.dataset.samples = String(d.series.t.length);
  }

  async function poll() {
    clearTimeout(timer);
    if (polling) return;
    polling = true;
    try {
      const response = await fetch(`/dashboard/data?window=${windowS}`, { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      last = await response.json();
      render(last);
      failures = 0;
      document.getElementById("live").className = "live";
      document.getElementById("live-text").textContent = "live";
    } catch (error) {
      failures += 1;
      document.getElementById("live").className = "live stale";
      document.getElementById("live-text").textContent = failures > 2 ? "gateway unreachable" : "reconnecting";
    } finally {
      polling = false;
      timer = setTimeout(poll, 1000);
    }
  }

  document.querySelectorAll("[data-window]").forEach((button) =>
    button.addEventListener("click", () => {
      windowS = Number(button.dataset.window);
      document.querySelectorAll("[data-window]").forEach((b) => b.classList.toggle("active", b === button));
      poll();
    }),
  );
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => last && render(last), 120);
  });
  poll();
})();
