// The + ADD BILLABLE METRIC form: slug from the name, builder or SQL, filters one by one, preview before saving.
(function () {
  "use strict";
  const form = document.getElementById("metric-form");
  if (!form) return;
  const config = JSON.parse(document.getElementById("metric-builder").textContent);
  const serverFilterErrors = JSON.parse(document.getElementById("filter-errors").textContent || "{}");
  const name = document.getElementById("id_name");
  const slug = document.getElementById("id_slug");
  const usageEvent = document.getElementById("id_usage_event");
  const aggregation = document.getElementById("id_aggregation");
  const field = document.getElementById("id_field");
  const filtersHidden = document.getElementById("id_filters");
  const filterRows = document.getElementById("filter-rows");
  const filterTemplate = document.getElementById("filter-row-template");
  const groupBy = document.getElementById("group-by-options");
  const builderSection = document.getElementById("builder-section");
  const sqlSection = document.getElementById("sql-section");
  const previewButton = document.getElementById("preview-button");
  const results = document.getElementById("preview-results");
  const NULL_OPS = ["is_null", "is_not_null"];
  const MAX_GROUP_BY = 3;
  let slugEdited = slug.value !== "";

  function slugify(text) {
    return text.trim().toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "").slice(0, 64);
  }

  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function option(value, label) {
    const node = element("option", { value: value }, label);
    return node;
  }

  function kind() {
    const checked = form.querySelector("input[name=kind]:checked");
    return checked ? checked.value : "builder";
  }

  function showKind() {
    builderSection.hidden = kind() !== "builder";
    sqlSection.hidden = kind() !== "sql";
  }

  function fieldsOf() {
    return config.schemas[usageEvent.value] || [];
  }

  function fillField(keep) {
    const numericOnly = config.numeric_aggregations.indexOf(aggregation.value) >= 0;
    const fields = fieldsOf().filter(function (f) { return !numericOnly || f.numeric; });
    let prompt = "Choose a field…";
    if (!usageEvent.value) prompt = "Choose a usage event first";
    else if (!fields.length) prompt = numericOnly ? "This usage event has no numeric field" : "No fields";
    field.replaceChildren(option("", prompt));
    fields.forEach(function (f) { field.appendChild(option(f.name, f.name + " (" + f.type + ")")); });
    if (keep && fields.some(function (f) { return f.name === keep; })) field.value = keep;
    else if (fields.length === 1) field.value = fields[0].name;
    document.getElementById("row-field").hidden = aggregation.value === "count";
  }

  function limitGroupBy() {
    const boxes = groupBy.querySelectorAll("input[type=checkbox]");
    const checked = groupBy.querySelectorAll("input[type=checkbox]:checked").length;
    boxes.forEach(function (box) { box.disabled = !box.checked && checked >= MAX_GROUP_BY; });
  }

  function fillGroupBy(selected) {
    const fields = fieldsOf().filter(function (f) { return f.groupable; });
    groupBy.replaceChildren();
    if (!usageEvent.value) {
      groupBy.appendChild(element("span", { class: "help" }, "Choose a usage event first."));
      return;
    }
    if (!fields.length) {
      groupBy.appendChild(element("span", { class: "help" }, "No String, Int64, Bool, Date32 or UUID field to group by."));
      return;
    }
    fields.forEach(function (f, index) {
      const id = "group-by-" + index;
      const label = element("label", { class: "check", for: id });
      const box = element("input", { type: "checkbox", name: "group_by", value: f.name, id: id });
      box.checked = selected.indexOf(f.name) >= 0;
      box.addEventListener("change", limitGroupBy);
      label.appendChild(box);
      label.appendChild(element("span", {}, f.name));
      groupBy.appendChild(label);
    });
    limitGroupBy();
  }

  function serializeFilters() {
    const rows = [];
    filterRows.querySelectorAll("tr.filter-row").forEach(function (row) {
      const condition = { field: row.querySelector(".filter-field").value, op: row.querySelector(".filter-op").value };
      if (NULL_OPS.indexOf(condition.op) < 0) condition.value = row.querySelector(".filter-value").value;
      rows.push(condition);
    });
    filtersHidden.value = JSON.stringify(rows);
  }

  function fillFilterField(select, keep) {
    select.replaceChildren();
    fieldsOf().forEach(function (f) {
      const node = option(f.name, f.name);
      node.title = f.type;
      select.appendChild(node);
    });
    if (keep && fieldsOf().some(function (f) { return f.name === keep; })) select.value = keep;
  }

  function showValueInput(row) {
    const input = row.querySelector(".filter-value");
    input.hidden = NULL_OPS.indexOf(row.querySelector(".filter-op").value) >= 0;
    const op = row.querySelector(".filter-op").value;
    input.placeholder = op === "in" || op === "not_in" ? "a, b, c" : "value";
  }

  function addFilter(condition) {
    const row = filterTemplate.content.firstElementChild.cloneNode(true);
    const select = row.querySelector(".filter-field");
    const op = row.querySelector(".filter-op");
    fillFilterField(select, condition && condition.field);
    config.ops.forEach(function (pair) { op.appendChild(option(pair[0], pair[1])); });
    if (condition && condition.op) op.value = condition.op;
    if (condition && condition.value !== undefined && condition.value !== null) {
      const value = condition.value;
      row.querySelector(".filter-value").value = Array.isArray(value) ? value.join(", ") : String(value);
    }
    row.querySelector(".remove-filter").addEventListener("click", function () { row.remove(); serializeFilters(); });
    row.querySelectorAll("input, select").forEach(function (input) {
      input.addEventListener("input", serializeFilters);
      input.addEventListener("change", function () { showValueInput(row); serializeFilters(); });
    });
    filterRows.appendChild(row);
    showValueInput(row);
    serializeFilters();
    return row;
  }

  function showFilterErrors(errors) {
    const rows = filterRows.querySelectorAll("tr.filter-row");
    rows.forEach(function (row, index) {
      const found = errors[String(index)];
      row.querySelector(".row-error").textContent = found ? found.join(" ") : "";
    });
  }

  // --- errors next to their fields, from the preview's JSON ---

  function clearErrors() {
    form.querySelectorAll("[data-errors-for]").forEach(function (box) { box.replaceChildren(); });
    showFilterErrors({});
  }

  function showErrors(errors, filterErrors) {
    Object.keys(errors || {}).forEach(function (key) {
      const box = form.querySelector('[data-errors-for="' + key + '"]') || form.querySelector('[data-errors-for="__all__"]');
      errors[key].forEach(function (message) { box.appendChild(element("div", { class: "error field-error" }, message)); });
    });
    showFilterErrors(filterErrors || {});
  }

  // --- the preview ---

  function periodText(iso, granularity) {
    const text = iso.replace("T", " ").replace(/:00Z$/, "").replace(/Z$/, "");
    if (granularity === "day") return text.slice(0, 10);
    if (granularity === "month") return text.slice(0, 7);
    return text;
  }

  function dimensionText(dimension) {
    if (!dimension) return "";
    return Object.keys(dimension).sort().map(function (key) {
      return key + ": " + (dimension[key] === null ? "—" : dimension[key]);
    }).join(", ");
  }

  function renderPreview(body) {
    results.replaceChildren();
    const shown = body.values.length;
    let caption = body.count + (body.count === 1 ? " value" : " values") + " for periods from " +
      periodText(body.start, "hour") + " to " + periodText(body.end, "hour") + " UTC";
    if (shown < body.count) caption += "; the first " + shown + " are shown";
    results.appendChild(element("p", { class: "help", id: "preview-caption" }, caption + "."));
    if (!shown) {
      results.appendChild(element("p", { class: "empty", id: "preview-empty" }, "No records give a value in this window."));
      return;
    }
    const grouped = body.values.some(function (v) { return v.dimension; });
    const table = element("table", { class: "table compact", id: "preview-table" });
    const head = element("tr");
    ["Customer", "Period (UTC)"].concat(grouped ? ["Dimension"] : [], ["Value"]).forEach(function (title) {
      head.appendChild(element("th", title === "Value" ? { class: "num" } : {}, title));
    });
    table.appendChild(element("thead")).appendChild(head);
    const tbody = table.appendChild(element("tbody"));
    body.values.forEach(function (v) {
      const row = element("tr");
      const customer = row.appendChild(element("td"));
      customer.appendChild(element("code", {}, v.customer_id));
      row.appendChild(element("td", { class: "nowrap" }, periodText(v.period_start, body.granularity)));
      if (grouped) row.appendChild(element("td", {}, dimensionText(v.dimension)));
      row.appendChild(element("td", { class: "num amount" }, v.value === null ? "—" : v.value));
      tbody.appendChild(row);
    });
    const scroll = element("div", { class: "table-scroll preview-scroll" });
    scroll.appendChild(table);
    results.appendChild(scroll);
  }

  async function preview() {
    serializeFilters();
    clearErrors();
    previewButton.disabled = true;
    results.replaceChildren(element("p", { class: "help" }, "Computing…"));
    try {
      const response = await fetch(form.dataset.previewUrl, {
        method: "POST",
        body: new FormData(form),
        headers: { "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value, Accept: "application/json" },
        credentials: "same-origin",
      });
      let body = null;
      try { body = await response.json(); } catch (e) { body = null; }
      if (response.ok && body) {
        renderPreview(body);
      } else if (body && body.errors) {
        showErrors(body.errors, body.filter_errors);
        results.replaceChildren(element("p", { class: "error", id: "preview-error" }, "Fix the marked fields to preview."));
      } else {
        results.replaceChildren(element("p", { class: "error", id: "preview-error" }, "The preview failed (HTTP " + response.status + ")."));
      }
    } catch (e) {
      results.replaceChildren(element("p", { class: "error", id: "preview-error" }, "The preview failed: " + e.message));
    } finally {
      previewButton.disabled = false;
    }
  }

  // --- wiring ---

  name.addEventListener("input", function () {
    if (!slugEdited) slug.value = slugify(name.value);
  });
  slug.addEventListener("input", function () { slugEdited = slug.value !== ""; });
  form.querySelectorAll("input[name=kind]").forEach(function (radio) { radio.addEventListener("change", showKind); });
  usageEvent.addEventListener("change", function () {
    fillField(field.value);
    fillGroupBy([]);
    filterRows.querySelectorAll("tr.filter-row").forEach(function (row) {
      fillFilterField(row.querySelector(".filter-field"), row.querySelector(".filter-field").value);
    });
    serializeFilters();
  });
  aggregation.addEventListener("change", function () { fillField(field.value); });
  document.getElementById("add-filter").addEventListener("click", function () {
    if (!usageEvent.value) {
      clearErrors();
      showErrors({ usage_event: ["Choose a usage event before adding filters."] });
      return;
    }
    addFilter(null).querySelector(".filter-field").focus();
  });
  previewButton.addEventListener("click", preview);
  form.addEventListener("submit", serializeFilters);

  // The state after a round trip with errors (or the first load).
  const state = config.state;
  if (state.usage_event) usageEvent.value = state.usage_event;
  fillField(state.field);
  fillGroupBy(state.group_by || []);
  (state.filters || []).forEach(function (condition) { addFilter(condition); });
  showFilterErrors(serverFilterErrors);
  showKind();
  form.dataset.ready = "true";
})();
