/* Loraboard's own script: charts (uPlot), the live metrics feed, upload progress.
 * Everything else is htmx attributes in the templates. No build step, no CDN. */
(function () {
  "use strict";

  var COLORS = {
    loss: "#2563eb", eval: "#ea580c", lr: "#7c3aed", plan: "#94a3b8", grad: "#059669",
    clip: "#dc2626", tps: "#0891b2", alloc: "#db2777", reserved: "#a3a3a3"
  };
  var PALETTE = ["#2563eb", "#ea580c", "#059669", "#7c3aed", "#db2777", "#0891b2", "#ca8a04", "#475569"];
  var CHART_HEIGHT = 220;

  function readJSON(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function formatTick(value) {
    if (value === null || value === undefined) return "";
    var magnitude = Math.abs(value);
    if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e6)) return value.toExponential(1);
    return String(+value.toPrecision(4));
  }

  /* [[xs, ys], [xs2, ys2], ...] -> [union of xs, ys aligned (null where a table has no point)]. */
  function joinTables(tables) {
    var xs = new Set();
    tables.forEach(function (t) { t[0].forEach(function (x) { xs.add(x); }); });
    var union = Array.from(xs).sort(function (a, b) { return a - b; });
    var columns = tables.map(function (t) {
      var at = new Map();
      t[0].forEach(function (x, i) { at.set(x, t[1][i]); });
      return union.map(function (x) { return at.has(x) ? at.get(x) : null; });
    });
    return [union].concat(columns);
  }

  function hasValues(data) {
    for (var s = 1; s < data.length; s++) {
      for (var i = 0; i < data[s].length; i++) if (data[s][i] !== null && data[s][i] !== undefined) return true;
    }
    return false;
  }

  /* A uPlot chart that sizes itself to its container and shows a note while it has no data. */
  function Chart(element, seriesDefs, xLabel, emptyNote) {
    this.element = element;
    this.seriesDefs = seriesDefs;
    this.xLabel = xLabel || "step";
    this.emptyNote = emptyNote || "No data yet.";
    this.plot = null;
    this.points = 0;
  }

  Chart.prototype.options = function () {
    var series = [{ label: this.xLabel, value: function (u, v) { return v === null ? "–" : formatTick(v); } }];
    this.seriesDefs.forEach(function (def) {
      series.push({
        label: def.label, stroke: def.color, width: def.width || 2, dash: def.dash, spanGaps: true,
        points: { show: def.points || false, size: 6, fill: def.color },
        value: function (u, v) { return v === null || v === undefined ? "–" : formatTick(v); }
      });
    });
    return {
      width: Math.max(this.element.clientWidth, 240), height: CHART_HEIGHT,
      scales: { x: { time: false } }, series: series,
      axes: [{ stroke: "#64748b", grid: { stroke: "#eef2f7" }, values: function (u, ticks) { return ticks.map(formatTick); } },
             { stroke: "#64748b", grid: { stroke: "#eef2f7" }, size: 56, values: function (u, ticks) { return ticks.map(formatTick); } }],
      cursor: { drag: { x: true, y: false } }
    };
  };

  Chart.prototype.setData = function (data) {
    this.points = data[0].length;
    this.element.setAttribute("data-points", String(this.points));
    if (!hasValues(data)) {
      if (!this.plot) this.element.innerHTML = '<p class="chart-empty">' + this.emptyNote + "</p>";
      return;
    }
    if (!this.plot) {
      this.element.innerHTML = "";
      this.plot = new uPlot(this.options(), data, this.element);
      var self = this;
      if (window.ResizeObserver) {
        new ResizeObserver(function () {
          var width = Math.max(self.element.clientWidth, 240);
          if (self.plot && Math.abs(self.plot.width - width) > 2) self.plot.setSize({ width: width, height: CHART_HEIGHT });
        }).observe(this.element);
      }
    } else {
      this.plot.setData(data);
    }
  };

  /* --- a run's live charts: history from the page, then SSE 'metrics' messages ------------------- */

  function RunCharts(root) {
    this.byStep = new Map();
    this.lastId = 0;
    var extras = readJSON("run-chart-extras") || {};
    this.plannedLr = extras.planned_lr || null;
    this.maxGradNorm = extras.max_grad_norm || 0;
    var find = function (name) { return root.querySelector('[data-metric-chart="' + name + '"]'); };
    this.charts = {
      loss: new Chart(find("loss"), [{ label: "train loss", color: COLORS.loss },
                                     { label: "eval loss", color: COLORS.eval, points: true }]),
      lr: new Chart(find("lr"), [{ label: "logged lr", color: COLORS.lr, points: true },
                                 { label: "planned", color: COLORS.plan, dash: [6, 4], width: 1.5 }]),
      grad: new Chart(find("grad"), [{ label: "grad norm", color: COLORS.grad },
                                     { label: "clip at", color: COLORS.clip, dash: [4, 4], width: 1 }]),
      tps: new Chart(find("tps"), [{ label: "tokens/s", color: COLORS.tps }]),
      mem: new Chart(find("mem"), [{ label: "allocated", color: COLORS.alloc }, { label: "reserved", color: COLORS.reserved }],
                     "step", "Not reported (a CPU worker has no GPU memory to measure).")
    };
    this.pending = false;
  }

  RunCharts.prototype.add = function (metric) {
    // Ids only grow: anything at or below the last one is a resent duplicate (a reconnect).
    if (metric.id <= this.lastId) return false;
    this.lastId = metric.id;
    var merged = this.byStep.get(metric.step) || { step: metric.step };
    Object.keys(metric).forEach(function (key) { if (metric[key] !== null) merged[key] = metric[key]; });
    this.byStep.set(metric.step, merged);
    return true;
  };

  RunCharts.prototype.column = function (rows, key) {
    return rows.map(function (row) { return row[key] === undefined ? null : row[key]; });
  };

  RunCharts.prototype.redraw = function () {
    var rows = Array.from(this.byStep.values()).sort(function (a, b) { return a.step - b.step; });
    var steps = rows.map(function (row) { return row.step; });
    var col = this.column.bind(this, rows);
    this.charts.loss.setData([steps, col("loss"), col("eval_loss")]);
    this.charts.lr.setData(this.lrData(steps, col("learning_rate")));
    var clip = this.maxGradNorm > 0 ? steps.map(function () { return this.maxGradNorm; }, this) : steps.map(function () { return null; });
    this.charts.grad.setData([steps, col("grad_norm"), clip]);
    this.charts.tps.setData([steps, col("tokens_per_second")]);
    this.charts.mem.setData([steps, col("gpu_memory_allocated_mb"), col("gpu_memory_reserved_mb")]);
  };

  RunCharts.prototype.lrData = function (steps, logged) {
    if (!this.plannedLr) return [steps, logged, steps.map(function () { return null; })];
    // The planned curve has its own x values: join both on the union of steps.
    return joinTables([[steps, logged], this.plannedLr]);
  };

  RunCharts.prototype.scheduleRedraw = function () {
    if (this.pending) return;
    this.pending = true;
    var self = this;
    requestAnimationFrame(function () { self.pending = false; self.redraw(); });
  };

  var runCharts = null;
  var hookedSources = new WeakSet();

  function setUpRunCharts() {
    var root = document.getElementById("run-live");
    if (!root || runCharts) return;
    runCharts = new RunCharts(root);
    (readJSON("run-metrics") || []).forEach(function (metric) { runCharts.add(metric); });
    runCharts.redraw();
  }

  // The htmx SSE extension owns the EventSource (and its reconnects); the charts listen on it too.
  document.addEventListener("htmx:sseOpen", function (event) {
    var source = event.detail && event.detail.source;
    if (!source || hookedSources.has(source)) return;
    hookedSources.add(source);
    source.addEventListener("metrics", function (message) {
      if (!runCharts) setUpRunCharts();
      if (runCharts && runCharts.add(JSON.parse(message.data))) runCharts.scheduleRedraw();
    });
  });

  /* --- static charts (the form's LR schedule) and compare overlays ------------------------------ */

  function setUpStaticCharts(root) {
    root.querySelectorAll("[data-static-chart]:not([data-ready])").forEach(function (element) {
      element.setAttribute("data-ready", "1");
      var spec = JSON.parse(element.getAttribute("data-static-chart"));
      var defs = spec.series.map(function (s, i) { return { label: s.label, color: PALETTE[i % PALETTE.length] }; });
      new Chart(element, defs, spec.xLabel).setData([spec.x].concat(spec.series.map(function (s) { return s.values; })));
    });
  }

  function setUpCompareCharts(root) {
    var spec = readJSON("compare-data");
    if (!spec) return;
    var xKey = spec.x === "tokens" ? "tokens_seen" : "step";
    root.querySelectorAll("[data-compare-chart]:not([data-ready])").forEach(function (element) {
      element.setAttribute("data-ready", "1");
      var metric = element.getAttribute("data-compare-chart");
      var tables = spec.runs.map(function (run) {
        var rows = run.metrics.filter(function (m) { return m[metric] !== null && m[xKey] !== null; });
        rows.sort(function (a, b) { return a[xKey] - b[xKey]; });
        return [rows.map(function (m) { return m[xKey]; }), rows.map(function (m) { return m[metric]; })];
      });
      var defs = spec.runs.map(function (run, i) { return { label: run.label, color: PALETTE[i % PALETTE.length], points: metric === "eval_loss" }; });
      var chart = new Chart(element, defs, spec.x === "tokens" ? "tokens seen" : "step",
                            metric === "eval_loss" ? "No evaluation in these runs." : "No data.");
      chart.setData(joinTables(tables));
    });
  }

  /* --- playground: answers stream in, chunk by chunk (server-sent chat.completion.chunk events) --- */

  function csrfHeaders() {
    // The token htmx sends on every request (base.html's hx-headers); a plain fetch must send it too.
    var headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
    return { "X-CSRF-Token": headers["X-CSRF-Token"] || "" };
  }

  function finishTurn(exchange) {
    // Once every answer of this exchange is complete, the turn joins the conversation the form sends.
    var answers = exchange.querySelectorAll(".content");
    for (var i = 0; i < answers.length; i++) { if (!answers[i].dataset.done) return; }
    var history = document.getElementById("c-history");
    var turns = JSON.parse(history.value || "[]");
    var turn = { user: exchange.dataset.prompt, adapter: "", base: "" };
    answers.forEach(function (answer) {
      var text = answer.textContent;
      turn[answer.dataset.side] = answer.dataset.failed || text === "(empty answer)" ? "" : text;
    });
    turns.push(turn);
    history.value = JSON.stringify(turns);
    var send = document.getElementById("send-button");
    if (send) send.disabled = false;
  }

  function streamAnswer(element) {
    var request = JSON.parse(element.getAttribute("data-stream"));
    element.removeAttribute("data-stream");
    var exchange = element.closest(".exchange");
    var status = element.parentNode.querySelector(".stream-status");
    var send = document.getElementById("send-button");
    if (send) send.disabled = true;  // the next message waits for this turn to be complete
    function done() {
      element.dataset.done = "1";
      if (exchange) finishTurn(exchange);
    }
    function fail(message) {
      element.classList.add("field-error");
      element.dataset.failed = "1";
      element.textContent = message;
      status.textContent = "";
      done();
    }
    fetch("/playground/stream", { method: "POST", headers: csrfHeaders(), body: new URLSearchParams(request) }).then(function (response) {
      if (!response.ok) { return response.text().then(function () { fail("The answer failed (" + response.status + ")."); }); }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      var finish = "";
      function handle(data) {
        if (data === "[DONE]") return;
        var chunk = JSON.parse(data);
        if (chunk.error) { fail(chunk.error.message); return; }
        if (chunk.usage) {
          if (!element.textContent.trim()) element.textContent = "(empty answer)";
          status.textContent = chunk.usage.completion_tokens + " tokens · " + finish;
        }
        (chunk.choices || []).forEach(function (choice) {
          if (choice.delta && choice.delta.content) element.textContent += choice.delta.content;
          if (choice.finish_reason) finish = choice.finish_reason;
        });
      }
      function read() {
        return reader.read().then(function (step) {
          if (step.done) { if (!element.dataset.done) done(); return; }
          buffer += decoder.decode(step.value, { stream: true });
          var events = buffer.split("\n\n");
          buffer = events.pop();
          events.forEach(function (event) {
            if (event.indexOf("data: ") === 0) handle(event.slice(6));
          });
          return read();
        });
      }
      return read();
    }).catch(function (error) { fail(String(error)); });
  }

  function setUpStreams(root) {
    root.querySelectorAll("[data-stream]").forEach(streamAnswer);
  }

  function setUp(root) {
    setUpStreams(root);
    setUpRunCharts();
    setUpStaticCharts(root);
    setUpCompareCharts(root);
  }

  /* --- "now: compiling…, for 42s": the phase's start comes in the HTML, the seconds tick here ---- */

  function formatElapsed(seconds) {
    if (seconds < 60) return seconds + "s";
    var minutes = Math.floor(seconds / 60);
    return minutes + "m " + String(seconds % 60).padStart(2, "0") + "s";
  }

  function tickElapsed() {
    document.querySelectorAll("[data-elapsed-since]").forEach(function (element) {
      var since = Date.parse(element.getAttribute("data-elapsed-since"));
      if (isNaN(since)) return;
      element.textContent = "for " + formatElapsed(Math.max(0, Math.round((Date.now() - since) / 1000)));
    });
  }
  setInterval(tickElapsed, 1000);

  /* --- htmx: show 400 answers (validation errors) instead of dropping them; upload progress ------ */

  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.xhr && event.detail.xhr.status === 400) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("htmx:xhr:progress", function (event) {
    var bar = document.getElementById("upload-progress");
    if (!bar || !event.detail.lengthComputable) return;
    var percent = Math.round((event.detail.loaded / event.detail.total) * 100);
    bar.hidden = false;
    bar.value = percent;
    document.getElementById("upload-percent").textContent = percent < 100 ? percent + " % uploaded" : "checking every line…";
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.target && event.target.id === "upload-form") {
      document.getElementById("upload-progress").hidden = true;
      document.getElementById("upload-percent").textContent = "";
    }
  });

  document.addEventListener("htmx:load", function (event) { setUp(event.target); });
  document.addEventListener("DOMContentLoaded", function () { setUp(document); });
})();
