// The + ADD USAGE EVENT form: slug derived from the name, fields added one by one, live preview.
(function () {
  "use strict";
  const form = document.getElementById("usage-event-form");
  if (!form) return;
  const name = document.getElementById("id_name");
  const slug = document.getElementById("id_api_slug");
  const kind = document.getElementById("id_kind");
  const period = document.getElementById("id_aggregate_period");
  const hidden = document.getElementById("id_dataschema");
  const rows = document.getElementById("schema-fields");
  const template = document.getElementById("field-row-template");
  const preview = document.getElementById("schema-preview");
  const serverErrors = JSON.parse(document.getElementById("field-errors").textContent || "{}");
  let slugEdited = slug.value !== "";

  function slugify(text) {
    return text.trim().toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "").slice(0, 64);
  }

  function schema() {
    const data = {};
    rows.querySelectorAll("tr.field-row").forEach(function (row) {
      const fieldName = row.querySelector(".field-name").value.trim();
      if (!fieldName) return;
      const type = row.querySelector(".field-type").value;
      data[fieldName] = row.querySelector(".field-required").checked ? type : "Nullable(" + type + ")";
    });
    return { customer_id: "String", timestamp: "DateTime64", data: data };
  }

  function refresh() {
    const value = schema();
    hidden.value = JSON.stringify(value);
    preview.textContent = JSON.stringify(value, null, 2);
    const row = document.getElementById("row-aggregate_period");
    if (row) row.style.display = kind.value === "aggregate" ? "" : "none";
    if (kind.value !== "aggregate") period.value = "";
  }

  function addRow(fieldName, type, required) {
    const row = template.content.firstElementChild.cloneNode(true);
    row.querySelector(".field-name").value = fieldName || "";
    if (type) row.querySelector(".field-type").value = type;
    row.querySelector(".field-required").checked = required !== false;
    const errors = serverErrors[fieldName || ""];
    if (errors) row.querySelector(".row-error").textContent = errors.join(" ");
    row.querySelector(".remove-field").addEventListener("click", function () { row.remove(); refresh(); });
    row.querySelectorAll("input, select").forEach(function (el) {
      el.addEventListener("input", refresh);
      el.addEventListener("change", refresh);
    });
    rows.appendChild(row);
    refresh();
    return row;
  }

  name.addEventListener("input", function () {
    if (!slugEdited) slug.value = slugify(name.value);
  });
  slug.addEventListener("input", function () { slugEdited = slug.value !== ""; });
  kind.addEventListener("change", refresh);
  document.getElementById("add-field").addEventListener("click", function () {
    addRow("", "Int64", true).querySelector(".field-name").focus();
  });

  // Rebuild the rows after a round trip with errors.
  try {
    const previous = JSON.parse(hidden.value || "{}").data || {};
    Object.keys(previous).forEach(function (key) {
      const text = previous[key];
      const match = /^Nullable\((\w+)\)$/.exec(text);
      addRow(key, match ? match[1] : text, !match);
    });
  } catch (e) { /* a hand-edited hidden field: start empty */ }
  refresh();
})();
