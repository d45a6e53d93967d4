// Small SVG time-series charts for the gateway dashboard (no dependencies).
//
//   Charts.draw(host, {t, series: [{key, label, color, values, area, dash, axis}],
//                      y: {label, format, min, max, log}, y2: {...}, stacked, window})
//
// host gets a legend, an SVG with labelled axes and a hover read-out. host.dataset.points
// counts the non-null values drawn (0 = nothing to show yet), so tests can tell data from none.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const HEIGHT = 210;
  const M = { top: 14, bottom: 38, left: 62, right: 18 };

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceStep(span, count) {
    const raw = span / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  }

  function linearTicks(min, max, count) {
    const step = niceStep(max - min || 1, count);
    const ticks = [];
    for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
      ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return ticks;
  }

  function scaleY(axis, values) {
    const finite = values.filter((v) => v !== null && Number.isFinite(v));
    if (axis.log) {
      const positive = finite.filter((v) => v > 0);
      let lo = axis.min !== undefined ? axis.min : Math.min(...positive, 0.01);
      let hi = Math.max(...positive, lo * 10);
      lo = Math.pow(10, Math.floor(Math.log10(lo)));
      hi = Math.pow(10, Math.ceil(Math.log10(hi)));
      const ticks = [];
      for (let v = lo; v <= hi * 1.0001; v *= 10) ticks.push(v);
      return {
        ticks,
        map: (v, top, bottom) => {
          const f = (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo));
          return bottom - f * (bottom - top);
        },
      };
    }
    let lo = axis.min !== undefined ? axis.min : Math.min(0, ...finite);
    // An empty or flat chart still gets a sensible scale: at least lo..lo+floor.
    let hi = axis.max !== undefined ? axis.max : Math.max(...finite, lo + (axis.floor ?? 1));
    if (axis.max === undefined) hi = hi + (hi - lo) * 0.08;
    const ticks = linearTicks(lo, hi, 4);
    if (axis.max === undefined) hi = Math.max(hi, ticks[ticks.length - 1]);
    return {
      ticks,
      map: (v, top, bottom) => bottom - ((v - lo) / (hi - lo || 1)) * (bottom - top),
    };
  }

  const TIME_STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800];

  function clock(t) {
    const d = new Date(t * 1000);
    return d.toTimeString().slice(0, 8);
  }

  function path(xs, ys) {
    let d = "";
    let pen = false;
    for (let i = 0; i < xs.length; i++) {
      if (ys[i] === null || !Number.isFinite(ys[i])) {
        pen = false;
        continue;
      }
      d += (pen ? "L" : "M") + xs[i].toFixed(1) + "," + ys[i].toFixed(1);
      pen = true;
    }
    return d;
  }

  function draw(host, spec) {
    const t = spec.t || [];
    const width = Math.max(host.clientWidth, 240);
    const y2 = spec.y2 || null;
    const margin = { ...M, right: y2 ? 62 : M.right };
    const left = margin.left;
    const right = width - margin.right;
    const top = margin.top;
    const bottom = HEIGHT - margin.bottom;

    // Stacking: each stacked series is drawn on top of the ones before it.
    const base = t.map(() => 0);
    const drawn = spec.series.map((s) => {
      if (!spec.stacked) return { ...s, top: s.values, bottom: null };
      const lower = base.slice();
      const upper = s.values.map((v, i) => (base[i] += v || 0));
      return { ...s, top: upper, bottom: lower };
    });
    const leftValues = drawn.filter((s) => s.axis !== "right").flatMap((s) => s.top);
    const rightValues = drawn.filter((s) => s.axis === "right").flatMap((s) => s.top);
    const yl = scaleY(spec.y, leftValues);
    const yr = y2 ? scaleY(y2, rightValues) : null;

    const now = t.length ? t[t.length - 1] : Date.now() / 1000;
    // The window, or less while the gateway is younger than it: a fresh start fills the width.
    const t0 = Math.max(now - (spec.window || 300), t.length ? Math.min(t[0], now - 10) : 0);
    const xOf = (v) => left + ((v - t0) / (now - t0 || 1)) * (right - left);
    const xs = t.map(xOf);

    const svg = el("svg", {
      width,
      height: HEIGHT,
      viewBox: `0 0 ${width} ${HEIGHT}`,
      class: "chart-svg",
      role: "img",
    });

    // Grid and y axis (left).
    for (const v of yl.ticks) {
      const y = yl.map(v, top, bottom);
      el("line", { x1: left, x2: right, y1: y, y2: y, class: "gridline" }, svg);
      el("text", { x: left - 8, y: y + 4, class: "tick", "text-anchor": "end" }, svg).textContent =
        spec.y.format(v);
    }
    if (yr) {
      for (const v of yr.ticks) {
        const y = yr.map(v, top, bottom);
        el("text", { x: right + 8, y: y + 4, class: "tick" }, svg).textContent = y2.format(v);
      }
    }
    // x axis: time ticks on whole steps.
    const step = TIME_STEPS.find((s) => (now - t0) / s <= 6) || 3600;
    for (let v = Math.ceil(t0 / step) * step; v <= now; v += step) {
      const x = xOf(v);
      el("line", { x1: x, x2: x, y1: bottom, y2: bottom + 5, class: "axis" }, svg);
      el("text", { x, y: bottom + 18, class: "tick", "text-anchor": "middle" }, svg).textContent =
        clock(v);
    }
    el("line", { x1: left, x2: right, y1: bottom, y2: bottom, class: "axis" }, svg);
    // Axis labels.
    el("text", { x: (left + right) / 2, y: HEIGHT - 4, class: "axis-label", "text-anchor": "middle" }, svg)
      .textContent = "time (local)";
    const yLabel = el("text", {
      class: "axis-label",
      "text-anchor": "middle",
      transform: `translate(14 ${(top + bottom) / 2}) rotate(-90)`,
    }, svg);
    yLabel.textContent = spec.y.label;
    if (yr) {
      el("text", {
        class: "axis-label",
        "text-anchor": "middle",
        transform: `translate(${width - 12} ${(top + bottom) / 2}) rotate(90)`,
      }, svg).textContent = y2.label;
    }

    // Series.
    let points = 0;
    for (const s of drawn) {
      const scale = s.axis === "right" && yr ? yr : yl;
      const ys = s.top.map((v) => (v === null || v === undefined ? null : scale.map(v, top, bottom)));
      points += s.values.filter((v) => v !== null && v !== undefined).length;
      if (s.area) {
        const lower = s.bottom
          ? s.bottom.map((v) => scale.map(v, top, bottom))
          : t.map(() => bottom);
        let d = "";
        let run = [];
        const flush = () => {
          if (run.length > 1) {
            d += "M" + run.map((i) => `${xs[i].toFixed(1)},${ys[i].toFixed(1)}`).join("L");
            d += "L" + run.slice().reverse().map((i) => `${xs[i].toFixed(1)},${lower[i].toFixed(1)}`).join("L") + "Z";
          }
          run = [];
        };
        ys.forEach((y, i) => (y === null ? flush() : run.push(i)));
        flush();
        el("path", { d, fill: s.color, "fill-opacity": s.fillOpacity || 0.28, class: "area" }, svg);
      }
      // A stacked series traces the top of the stack: draw its line only where it adds something.
      const zero = (i) => !s.values[i];
      const line = spec.stacked
        ? ys.map((y, i) => (zero(i) && (i === 0 || zero(i - 1)) && (i === ys.length - 1 || zero(i + 1)) ? null : y))
        : ys;
      el("path", {
        d: path(xs, line),
        stroke: s.color,
        fill: "none",
        "stroke-width": s.width || 2,
        "stroke-dasharray": s.dash ? "5 4" : "none",
        class: "series",
        "data-key": s.key,
      }, svg);
    }

    // Hover read-out.
    const cursor = el("line", { y1: top, y2: bottom, class: "cursor", visibility: "hidden" }, svg);
    const overlay = el("rect", { x: left, y: top, width: right - left, height: bottom - top, fill: "transparent" }, svg);
    const tip = document.createElement("div");
    tip.className = "tip";
    overlay.addEventListener("mousemove", (event) => {
      const box = svg.getBoundingClientRect();
      const x = event.clientX - box.left;
      let best = -1;
      xs.forEach((v, i) => { if (best < 0 || Math.abs(v - x) < Math.abs(xs[best] - x)) best = i; });
      if (best < 0) return;
      cursor.setAttribute("x1", xs[best]);
      cursor.setAttribute("x2", xs[best]);
      cursor.setAttribute("visibility", "visible");
      const rows = spec.series.map((s) => {
        const fmt = s.axis === "right" && y2 ? y2.format : spec.y.format;
        const v = s.values[best];
        return `<div><i style="background:${s.color}"></i>${s.label}<b>${v === null || v === undefined ? "–" : fmt(v)}</b></div>`;
      });
      tip.innerHTML = `<div class="tip-time">${clock(t[best])}</div>` + rows.join("");
      tip.style.display = "block";
      tip.style.left = Math.min(xs[best] + 12, width - 190) + "px";
    });
    overlay.addEventListener("mouseleave", () => {
      cursor.setAttribute("visibility", "hidden");
      tip.style.display = "none";
    });

    if (!points) {
      el("text", { x: (left + right) / 2, y: (top + bottom) / 2, class: "empty", "text-anchor": "middle" }, svg)
        .textContent = "waiting for data…";
    }

    // Legend with the latest value of each series.
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const s of spec.series) {
      const fmt = s.axis === "right" && y2 ? y2.format : spec.y.format;
      const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
      const item = document.createElement("span");
      item.className = "legend-item";
      item.innerHTML = `<i style="background:${s.color}"></i>${s.label}<b>${last === undefined ? "–" : fmt(last)}</b>`;
      legend.appendChild(item);
    }

    host.replaceChildren(legend, svg, tip);
    host.dataset.points = String(points);
  }

  return { draw };
})();
