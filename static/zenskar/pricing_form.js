// The pricing form: fields that fit the chosen model, tier rows, and a live chart of amount against
// quantity. The curve's points come from the server's rating engine (billing.rating.rate), so the chart
// can never disagree with an invoice; this script only draws them.
(function () {
  "use strict";
  const form = document.getElementById("pricing-form");
  if (!form) return;
  const SVG = "http://www.w3.org/2000/svg";
  const H = 300, LEFT = 56, RIGHT = 448, TOP = 14, BOTTOM = 262;
  const COLOURS = ["#4f46e5", "#0d9488", "#d97706", "#db2777", "#2563eb", "#65a30d"];
  const MODEL_FIELDS = ["pricing_type", "unit_amount", "package_size", "percentage", "tiers", "matrix_dimensions", "matrix_values", "default_unit_amount"];
  const type = document.getElementById("id_pricing_type");
  const rows = document.getElementById("tier-rows");
  const template = document.getElementById("tier-row-template");
  const chart = document.getElementById("pricing-chart");
  const status = document.getElementById("chart-status");
  const legend = document.getElementById("chart-legend");
  const samples = document.getElementById("chart-samples");
  let timer = null;
  let sequence = 0;

  function showModel() {
    const chosen = type.value;
    form.querySelectorAll(".model-section").forEach(function (section) {
      section.hidden = section.dataset.models.split(" ").indexOf(chosen) < 0;
    });
    // A step's tier is one amount: no flat amount column.
    form.querySelectorAll(".flat-col").forEach(function (cell) { cell.hidden = chosen === "step"; });
    const label = form.querySelector("#row-unit_amount label");
    if (label) label.textContent = chosen === "package" ? "Amount per package" : chosen === "flat_fee" ? "Fee per period" : "Unit amount";
  }

  function renumber() {
    rows.querySelectorAll("tr.tier-row").forEach(function (row, index) {
      row.querySelector(".tier-number").textContent = String(index + 1);
      const last = index === rows.children.length - 1;
      const bound = row.querySelector("input[name=tier_up_to]");
      bound.placeholder = last ? "no limit (last tier)" : "e.g. 100";
    });
  }

  function wireRow(row) {
    row.querySelector(".remove-tier").addEventListener("click", function () {
      if (rows.children.length > 1) row.remove();
      renumber();
      schedule();
    });
  }

  function addTier() {
    const row = template.content.firstElementChild.cloneNode(true);
    rows.appendChild(row);
    wireRow(row);
    renumber();
    showModel();
    row.querySelector("input").focus();
  }

  function el(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    Object.keys(attributes).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceStep(span) {
    const raw = span > 0 ? span / 5 : 1;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 2.5, 5, 10].map(function (m) { return m * magnitude; }).find(function (s) { return s >= raw; });
  }

  function label(value, step) {
    const places = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return value.toLocaleString("en-US", { minimumFractionDigits: Math.min(places, 6), maximumFractionDigits: Math.min(places, 6) });
  }

  function clearErrors() {
    MODEL_FIELDS.forEach(function (name) {
      const box = form.querySelector('[data-errors-for="' + name + '"]');
      if (box) box.replaceChildren();
    });
  }

  function showErrors(errors) {
    clearErrors();
    const general = [];
    Object.keys(errors).forEach(function (name) {
      const box = form.querySelector('[data-errors-for="' + name + '"]');
      errors[name].forEach(function (message) {
        if (box && MODEL_FIELDS.indexOf(name) >= 0) {
          const div = document.createElement("div");
          div.className = "error field-error";
          div.textContent = message;
          box.appendChild(div);
        } else {
          general.push(message);
        }
      });
    });
    return general;
  }

  function draw(body) {
    chart.querySelectorAll(":scope > :not(title)").forEach(function (node) { node.remove(); });
    legend.replaceChildren();
    const series = body.series.map(function (s) {
      return { label: s.label, points: s.points.map(function (p) { return [parseFloat(p[0]), parseFloat(p[1]), p[0], p[1]]; }) };
    });
    let maxQ = 0, minA = 0, maxA = 0;
    series.forEach(function (s) {
      s.points.forEach(function (p) { maxQ = Math.max(maxQ, p[0]); minA = Math.min(minA, p[1]); maxA = Math.max(maxA, p[1]); });
    });
    const xStep = niceStep(maxQ), yStep = niceStep(maxA - minA);
    const xTop = Math.max(xStep, Math.ceil(maxQ / xStep) * xStep);
    const yTop = Math.max(yStep, Math.ceil(maxA / yStep) * yStep);
    const yBottom = Math.min(0, Math.floor(minA / yStep) * yStep);
    const x = function (q) { return LEFT + (RIGHT - LEFT) * q / xTop; };
    const y = function (a) { return BOTTOM - (BOTTOM - TOP) * (a - yBottom) / (yTop - yBottom); };
    for (let v = yBottom; v <= yTop + yStep / 1e6; v += yStep) {
      chart.appendChild(el("line", { class: "grid", x1: LEFT, x2: RIGHT, y1: y(v), y2: y(v) }));
      chart.appendChild(el("text", { class: "axis-label", x: LEFT - 6, y: y(v), "text-anchor": "end", "dominant-baseline": "middle" }, label(v, yStep)));
    }
    for (let v = 0; v <= xTop + xStep / 1e6; v += xStep) {
      chart.appendChild(el("line", { class: "axis", x1: x(v), x2: x(v), y1: BOTTOM, y2: BOTTOM + 4 }));
      const last = v + xStep > xTop + xStep / 1e6;
      chart.appendChild(el("text", { class: "axis-label", x: x(v), y: BOTTOM + 18, "text-anchor": last ? "end" : "middle" }, label(v, xStep)));
    }
    chart.appendChild(el("text", { class: "axis-title", x: (LEFT + RIGHT) / 2, y: H - 4, "text-anchor": "middle" }, "quantity"));
    chart.appendChild(el("text", { class: "axis-title", x: 12, y: (TOP + BOTTOM) / 2, "text-anchor": "middle", transform: "rotate(-90 12 " + (TOP + BOTTOM) / 2 + ")" }, "amount"));
    body.bounds.forEach(function (bound) {
      const q = parseFloat(bound);
      if (q > xTop) return;
      chart.appendChild(el("line", { class: "tier-bound", x1: x(q), x2: x(q), y1: TOP, y2: BOTTOM, "data-bound": bound }));
      chart.appendChild(el("text", { class: "tier-label", x: x(q) + 4, y: TOP + 10 }, "up to " + bound));
    });
    chart.appendChild(el("line", { class: "axis", x1: LEFT, x2: RIGHT, y1: y(0), y2: y(0) }));
    chart.appendChild(el("line", { class: "axis", x1: LEFT, x2: LEFT, y1: TOP, y2: BOTTOM }));
    series.forEach(function (s, index) {
      const colour = COLOURS[index % COLOURS.length];
      const group = el("g", { class: "series", "data-label": s.label });
      group.appendChild(el("polyline", { class: "curve", fill: "none", stroke: colour, points: s.points.map(function (p) { return x(p[0]).toFixed(2) + "," + y(p[1]).toFixed(2); }).join(" ") }));
      s.points.forEach(function (p) {
        const dot = el("circle", { class: "point", cx: x(p[0]).toFixed(2), cy: y(p[1]).toFixed(2), r: 2.2, fill: colour, "data-quantity": p[2], "data-amount": p[3] });
        dot.appendChild(el("title", {}, p[2] + " → " + p[3]));
        group.appendChild(dot);
      });
      chart.appendChild(group);
      if (series.length > 1) {
        const item = document.createElement("span");
        item.className = "legend-item";
        item.style.setProperty("--colour", colour);
        item.textContent = s.label;
        legend.appendChild(item);
      }
    });
    // A few exact figures under the chart: at each bound and at the end of the range.
    const tbody = samples.querySelector("tbody");
    tbody.replaceChildren();
    const first = series[0];
    const wanted = body.bounds.map(parseFloat).concat([first.points[first.points.length - 1][0]]);
    first.points.filter(function (p) { return wanted.indexOf(p[0]) >= 0; }).forEach(function (p) {
      const tr = document.createElement("tr");
      [p[2], p[3]].forEach(function (text) { const td = document.createElement("td"); td.className = "num amount"; td.textContent = text; tr.appendChild(td); });
      tbody.appendChild(tr);
    });
    samples.hidden = series.length !== 1 || !tbody.children.length;
  }

  function preview() {
    const mine = ++sequence;
    const data = new FormData(form);
    fetch(form.dataset.previewUrl, { method: "POST", body: data, credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) { return response.json().then(function (body) { return { ok: response.ok, body: body }; }); })
      .then(function (result) {
        if (mine !== sequence) return;  // a newer preview is on its way
        if (!result.ok) {
          const general = showErrors(result.body.errors || {});
          status.textContent = general.length ? general.join(" ") : (result.body.detail || "Fix the fields marked in red to see the curve.");
          status.className = "error";
          chart.dataset.state = "error";
          return;
        }
        clearErrors();
        draw(result.body);
        status.textContent = "Hover the curve for the exact amount at a quantity.";
        status.className = "help";
        chart.dataset.state = "drawn";
      })
      .catch(function () {
        if (mine !== sequence) return;
        status.textContent = "The preview could not be computed; the form still saves.";
        status.className = "error";
      });
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(preview, 250);
  }

  document.getElementById("add-tier").addEventListener("click", function () { addTier(); schedule(); });
  rows.querySelectorAll("tr.tier-row").forEach(wireRow);
  type.addEventListener("change", function () { showModel(); schedule(); });
  form.addEventListener("input", function (event) {
    if (event.target.closest(".model-section") || event.target === type) schedule();
  });
  showModel();
  renumber();
  preview();
  form.dataset.ready = "true";
})();
