// A billable metric's page: refresh while the history is recomputed; the override dialog.
(function () {
  "use strict";
  const dialog = document.getElementById("override-dialog");

  const progress = document.querySelector("[data-refresh-seconds]");
  if (progress) {
    const delay = 1000 * Number(progress.dataset.refreshSeconds || 2);
    const refresh = function () {
      // Never throw away what an admin is typing into the override dialog.
      if (dialog && dialog.open) window.setTimeout(refresh, delay);
      else window.location.reload();
    };
    window.setTimeout(refresh, delay);
  }

  document.body.dataset.metricPageReady = "true";
  if (!dialog) return;
  const form = document.getElementById("override-form");
  const value = document.getElementById("override-value");
  const reason = document.getElementById("override-reason");
  const clear = document.getElementById("override-clear");

  document.querySelectorAll(".override-open").forEach(function (button) {
    button.addEventListener("click", function () {
      form.action = button.dataset.url;
      document.getElementById("override-target").textContent = button.dataset.label;
      document.getElementById("override-computed").textContent =
        "Computed: " + (button.dataset.computed || "none (the records are gone)") +
        (button.dataset.override ? " · current override: " + button.dataset.override : "");
      value.value = button.dataset.override || button.dataset.computed || "";
      reason.value = "";
      clear.hidden = !button.dataset.override;
      dialog.showModal();
      value.focus();
      value.select();
    });
  });
  document.getElementById("override-cancel").addEventListener("click", function () { dialog.close(); });
})();
