/* scene-telemetry run report: sortable scenes table and the uPlot charts.
 * Data comes from <script id="report-data" type="application/json">; values from the run folder are only ever
 * put on the page as text (textContent, canvas text), never as HTML. */
(function () {
  "use strict";

  var OK = "#1a7f37", BAD = "#cf222e", BLUE = "#0969da", ORANGE = "#bc4c00", PURPLE = "#8250df", GREY = "#57606a";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var drawn = 0;

  /* ---- table sorting ---- */

  function sortKey(cell, numeric) {
    var raw = cell.getAttribute("data-v");
    if (raw === null || raw === "") return null;
    if (!numeric) return raw.toLowerCase();
    var n = parseFloat(raw);
    return isNaN(n) ? null : n;
  }

  function sortTable(table, column, th) {
    var numeric = th.getAttribute("data-type") === "n";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (row, i) { return { row: row, key: sortKey(row.cells[column], numeric), i: i }; });
    keyed.sort(function (a, b) {
      if (a.key === null && b.key === null) return a.i - b.i;
      if (a.key === null) return 1;  // unrecorded values last, either direction
      if (b.key === null) return -1;
      var c = a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
      return (ascending ? c : -c) || a.i - b.i;
    });
    var fragment = document.createDocumentFragment();
    keyed.forEach(function (k) { fragment.appendChild(k.row); });
    body.appendChild(fragment);
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) { other.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      th.addEventListener("click", function () { sortTable(table, column, th); });
    });
  });

  /* ---- plots ---- */

  function element(id) { return document.getElementById(id); }

  function empty(target, text) {
    var p = document.createElement("p");
    p.className = "empty";
    p.textContent = text;
    target.appendChild(p);
  }

  function width(target) { return Math.max(320, target.clientWidth || 560); }

  function sceneX(n) {
    var xs = [];
    for (var i = 1; i <= n; i++) xs.push(i);
    return xs;
  }

  function sceneAxis() {
    return {
      label: "scene (run order)",
      incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000],
      values: function (u, splits) { return splits.map(function (v) { return Number.isInteger(v) ? String(v) : ""; }); }
    };
  }

  function sceneSeries() {
    return { label: "scene", value: function (u, v) { return v == null ? "--" : (data.ids[v - 1] || "--"); } };
  }

  function plot(id, opts, series, make) {
    var target = element(id);
    if (!target) return;
    if (typeof uPlot === "undefined") { empty(target, "The plotting library did not load."); return; }
    opts.width = width(target);
    opts.height = opts.height || 240;
    var chart = new uPlot(opts, series, target);
    drawn += 1;
    if (make) make(chart);
    window.addEventListener("resize", function () { chart.setSize({ width: width(target), height: opts.height }); });
  }

  function bars() { return uPlot.paths.bars({ size: [0.7, 60] }); }

  function durationPlot() {
    var n = data.ids.length, ok = [], bad = [];
    for (var i = 0; i < n; i++) {
      var d = data.duration[i];
      ok.push(data.ok[i] === false ? null : d);
      bad.push(data.ok[i] === false ? d : null);
    }
    if (!data.duration.some(function (d) { return d != null; })) {
      empty(element("plot-duration"), "No scene recorded a duration.");
      return;
    }
    plot("plot-duration", {
      scales: { x: { time: false, range: [0.5, n + 0.5] }, y: { range: function (u, lo, hi) { return [0, hi * 1.05 || 1]; } } },
      series: [sceneSeries(),
        { label: "succeeded (s)", stroke: OK, fill: "rgba(26,127,55,0.55)", paths: bars(), points: { show: false } },
        { label: "failed (s)", stroke: BAD, fill: "rgba(207,34,46,0.7)", paths: bars(), points: { show: false } }],
      axes: [sceneAxis(), { label: "seconds" }]
    }, [sceneX(n), ok, bad]);
  }

  function memoryPlot() {
    var m = data.memory, target = element("plot-memory");
    if (!m) { empty(target, "No memory was recorded (no telemetry, or neither VRAM nor host RAM)."); return; }
    var n = data.ids.length, dots = { show: true, size: n > 200 ? 3 : 6 };
    var hasPeak = m.peak.some(function (v) { return v != null; });
    var series = [sceneSeries(),
      { label: m.labels[0], stroke: BLUE, width: 1.5, points: dots },
      { label: m.labels[1], stroke: ORANGE, width: 1.5, points: dots },
      { label: hasPeak ? m.labels[2] : m.labels[2] + " (not recorded)", stroke: PURPLE, width: 1.5, points: dots },
      { label: m.labels[3], stroke: GREY, dash: [6, 4], width: 1.5, points: { show: n <= 50, size: 6, fill: GREY } }];
    plot("plot-memory", {
      scales: { x: { time: false, range: [0.5, n + 0.5] }, y: { range: function (u, lo, hi) { return [0, hi * 1.08 || 1]; } } },
      series: series,
      axes: [sceneAxis(), { label: "MiB", size: 70 }]
    }, [sceneX(n), m.before, m.after, m.peak, m.total]);
  }

  function exitPlot() {
    var names = data.exits.names, counts = data.exits.counts, k = names.length;
    if (!k) { empty(element("plot-exits"), "No scenes."); return; }
    var xs = [], good = [], bad = [];
    for (var i = 0; i < k; i++) {
      xs.push(i);
      var success = data.exits.ok[i];
      good.push(success ? counts[i] : null);
      bad.push(success ? null : counts[i]);
    }
    plot("plot-exits", {
      scales: { x: { time: false, range: [-0.5, k - 0.5] }, y: { range: function (u, lo, hi) { return [0, Math.max(1, hi * 1.1)]; } } },
      series: [{ label: "exit reason", value: function (u, v) { return v == null ? "--" : (names[v] || "--"); } },
        { label: "scenes (ok)", stroke: OK, fill: "rgba(26,127,55,0.55)", paths: bars(), points: { show: false } },
        { label: "scenes (not ok)", stroke: BAD, fill: "rgba(207,34,46,0.7)", paths: bars(), points: { show: false } }],
      axes: [{ splits: function () { return xs; }, values: function (u, splits) { return splits.map(function (v) { return names[v] || ""; }); } },
        { label: "scenes", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }]
    }, [xs, good, bad]);
  }

  function timelinePlot() {
    var t = data.timeline;
    if (!t || !element("plot-timeline")) return;
    var lanes = t.servers.length;
    var names = t.servers.map(function (name) { return name.replace(/^https?:\/\//, ""); });
    var longest = Math.max.apply(null, names.map(function (name) { return name.length; }));
    if (!t.start.length) { empty(element("plot-timeline"), "No scene recorded when it ran."); return; }
    var lo = Math.min.apply(null, t.start), hi = Math.max.apply(null, t.end);
    var ticks = [];
    for (var i = 0; i < lanes; i++) ticks.push(i);
    function drawLanes(u) {
      var ctx = u.ctx, box = u.bbox;
      ctx.save();
      ctx.beginPath();
      ctx.rect(box.left, box.top, box.width, box.height);
      ctx.clip();
      var laneHeight = Math.abs(u.valToPos(0, "y", true) - u.valToPos(1, "y", true));
      for (var j = 0; j < t.start.length; j++) {
        var x0 = u.valToPos(t.start[j], "x", true), x1 = u.valToPos(t.end[j], "x", true);
        var yc = u.valToPos(t.lane[j], "y", true);
        ctx.fillStyle = t.ok[j] === false ? BAD : OK;
        ctx.fillRect(x0, yc - laneHeight * 0.35, Math.max(1, x1 - x0 - 1), laneHeight * 0.7);
      }
      ctx.restore();
    }
    plot("plot-timeline", {
      height: Math.max(160, 40 * lanes + 80),
      scales: { x: { time: true, range: [lo, hi] }, y: { range: [-0.5, lanes - 0.5] } },
      series: [{ label: "time" }, { label: "scenes (green ok, red failed)", stroke: OK, paths: function () { return null; }, points: { show: false } }],
      axes: [{}, { splits: function () { return ticks; }, values: function (u, splits) { return splits.map(function (v) { return names[v] || ""; }); },
        size: Math.min(320, 24 + 7 * longest) }],
      hooks: { draw: [drawLanes] }
    }, [[lo, hi], [null, null]]);
  }

  [durationPlot, memoryPlot, exitPlot, timelinePlot].forEach(function (draw) {
    try { draw(); } catch (err) { console.error("plot failed: " + err); }
  });
  document.documentElement.setAttribute("data-plots-drawn", String(drawn));
})();
