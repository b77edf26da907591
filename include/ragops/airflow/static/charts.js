// The LLMOps page's trend charts (uPlot, vendored next to this file). Data: the JSON block
// #chart-data written by the server ({charts, events, thresholds, groups}); every value read as
// data, never as markup. Time axis in UTC; hover shows each metric's value and the run; a click
// on a point opens that run's drill-down.
(function () {
  "use strict";
  const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
  const EVENT_COLOURS = {"promotion": "#05603a", "rollback": "#b42318", "index swap": "#6941c6",
                         "index rollback": "#b54708"};
  let plots = [];

  function filtered(points) {
    const purpose = document.getElementById("chart-purpose").value;
    const prompt = document.getElementById("chart-prompt").value;
    return points.filter((p) => (purpose === "all" || p.purpose === purpose) && (prompt === "all" || p.prompt === prompt));
  }

  function controlLimits(values) {  // mean +- 3 sd of the nightly runs shown (Shewhart), when there are 5 or more
    const v = values.filter((x) => typeof x === "number");
    if (v.length < 5) return null;
    const mean = v.reduce((a, b) => a + b, 0) / v.length;
    const sd = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1));
    return [Math.max(0, mean - 3 * sd), Math.min(1, mean + 3 * sd)];
  }

  function overlay(u, metrics, events, thresholds, points) {
    const ctx = u.ctx;
    const [x0, x1] = [u.scales.x.min, u.scales.x.max];
    const left = u.valToPos(x0, "x", true), right = u.valToPos(x1, "x", true);
    const top = u.valToPos(1, "y", true), bottom = u.valToPos(0, "y", true);
    ctx.save();
    ctx.lineWidth = 1 * devicePixelRatio;
    ctx.font = (10 * devicePixelRatio) + "px sans-serif";
    for (const e of events) {
      if (e.t < x0 || e.t > x1) continue;
      const x = u.valToPos(e.t, "x", true);
      ctx.strokeStyle = ctx.fillStyle = EVENT_COLOURS[e.kind] || "#667085";
      ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke();
      ctx.fillText(e.kind + ": " + e.label, x + 3 * devicePixelRatio, top + 10 * devicePixelRatio);
    }
    metrics.forEach((m, i) => {
      ctx.strokeStyle = ctx.fillStyle = COLOURS[i % COLOURS.length];
      if (typeof thresholds[m] === "number") {  // the default gate's threshold
        const y = u.valToPos(thresholds[m], "y", true);
        ctx.setLineDash([8 * devicePixelRatio, 4 * devicePixelRatio]);
        ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
        const label = "gate " + m + " " + thresholds[m];
        ctx.fillText(label, right - ctx.measureText(label).width - 4 * devicePixelRatio, y - 3 * devicePixelRatio);
      }
      const limits = controlLimits(points.filter((p) => p.purpose === "nightly").map((p) => p.metrics[m]));
      if (limits) {  // control limits of the nightly series
        ctx.setLineDash([1 * devicePixelRatio, 3 * devicePixelRatio]);
        for (const v of limits) {
          const y = u.valToPos(v, "y", true);
          ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
        }
      }
    });
    ctx.restore();
  }

  function draw() {
    plots.forEach((p) => p.destroy());
    plots = [];
    const data = JSON.parse(document.getElementById("chart-data").textContent);
    document.querySelectorAll(".chart").forEach((el) => {
      const chart = data.charts[el.dataset.key];
      const metrics = data.groups[el.dataset.group];
      const points = filtered(chart.points);
      el.dataset.points = String(points.length);
      el.textContent = "";
      if (!points.length) {
        el.textContent = "No runs of this purpose and prompt here: change the filter above.";
        return;
      }
      const xs = points.map((p) => p.t);
      // events from the first run shown on (a promotion after the last run still shows)
      const events = data.events.filter((e) => (e.index === null || e.index === chart.index) && e.t >= xs[0]);
      const last = Math.max(xs[xs.length - 1], ...events.map((e) => e.t));
      const series = metrics.map((m) => points.map((p) => (typeof p.metrics[m] === "number" ? p.metrics[m] : null)));
      const hover = el.nextElementSibling;
      // the page's colours (light, dark, or Airflow's mode): axes and grid readable on either
      const css = getComputedStyle(document.documentElement);
      const fg = css.getPropertyValue("--fg").trim() || "#1d2939";
      const line = css.getPropertyValue("--line").trim() || "#eaecf0";
      const opts = {
        title: el.dataset.group + " metrics", width: Math.min(el.clientWidth || 900, 1100), height: 240,
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
        scales: {x: {time: true, range: (u, lo, hi) => {
                   hi = Math.max(hi, last);
                   const pad = lo === hi ? 43200 : (hi - lo) * 0.03;
                   return [lo - pad, hi + pad];
                 }},
                 y: {range: [0, 1]}},
        axes: [{label: "time (UTC)", stroke: fg, grid: {stroke: line}, ticks: {stroke: line}},
               {stroke: fg, grid: {stroke: line}, ticks: {stroke: line}}],
        series: [{label: "run (UTC)", value: "{YYYY}-{MM}-{DD} {HH}:{mm}"},
                 ...metrics.map((m, i) => ({label: m, stroke: COLOURS[i % COLOURS.length], width: 2,
                                            points: {show: true, size: 6}, spanGaps: true,
                                            value: (u, v) => (v == null ? "\u2013" : v.toFixed(3))}))],
        hooks: {
          draw: [(u) => overlay(u, metrics, events, data.thresholds, points)],
          setCursor: [(u) => {
            const i = u.cursor.idx;
            hover.textContent = i == null ? "" : points[i].run_id + " \u00b7 " + points[i].prompt + " \u00b7 " + points[i].purpose +
              " \u00b7 " + points[i].at.slice(0, 16).replace("T", " ") + " UTC (click to open the run)";
          }],
        },
      };
      const u = new uPlot(opts, [xs, ...series], el);
      // uPlot handles mousedown/mouseup on its overlay (drag to zoom) and no click reaches it: a
      // mouseup where the mousedown was (no drag) opens the run under the cursor
      let down = null;
      u.over.addEventListener("mousedown", (e) => { down = [e.clientX, e.clientY]; });
      u.over.addEventListener("mouseup", (e) => {
        const i = u.cursor.idx;
        const still = down && Math.abs(e.clientX - down[0]) < 3 && Math.abs(e.clientY - down[1]) < 3;
        down = null;
        if (still && i != null) window.location.href = "eval/" + encodeURIComponent(points[i].run_id);
      });
      plots.push(u);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!document.getElementById("chart-data") || typeof uPlot === "undefined") return;
    document.getElementById("chart-purpose").addEventListener("change", draw);
    document.getElementById("chart-prompt").addEventListener("change", draw);
    draw();
  });
})();
