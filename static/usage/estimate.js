// Refreshes the request form's GPU capacity and cost estimate as its fields change.
// Without JavaScript the "Check capacity and cost" button does the same with a full page.
(function () {
  "use strict";
  var body = document.getElementById("estimate-body");
  var form = body && body.closest("form");
  if (!form || !body.dataset.url || !window.fetch) return;
  var FIELDS = [
    "start_date", "end_date", "expected_users", "notebooks_per_user", "hardware_options",
    "gpu_type", "gpus_per_user", "max_gpus", "home_size_gib", "shared_volume_gib",
  ];
  var timer = null;
  var latest = 0;

  function refresh() {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, name) {
      if (FIELDS.indexOf(name) >= 0) params.append(name, value);
    });
    if (body.dataset.hub) params.append("hub", body.dataset.hub);
    var mine = ++latest;
    body.setAttribute("aria-busy", "true");
    fetch(body.dataset.url + "?" + params.toString(), { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        return response.text();
      })
      .then(function (html) {
        if (mine === latest) body.innerHTML = html; // same-origin, escaped by the server
      })
      .catch(function () { /* keep the last figures; the button still works */ })
      .finally(function () {
        if (mine === latest) body.removeAttribute("aria-busy");
      });
  }

  function changed(event) {
    if (FIELDS.indexOf(event.target.name) < 0) return;
    clearTimeout(timer);
    timer = setTimeout(refresh, 400);
  }

  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
})();
