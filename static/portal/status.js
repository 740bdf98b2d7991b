// Refresh a hub's status while it is changing; without JavaScript the page simply shows the
// state at load time.
(function () {
  "use strict";
  var SETTLED = ["running", "failed", "deleted", "rejected", "cancelled", "suspended"];
  var box = document.getElementById("hub-status");
  if (!box) return;
  var initial = box.dataset.state;
  function poll() {
    if (SETTLED.indexOf(box.dataset.state) !== -1) return;
    fetch(box.dataset.url, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) return;
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var fresh = holder.querySelector("#hub-status");
        if (!fresh) return;
        if (fresh.dataset.state !== initial) {
          window.location.reload(); // new state: the timeline and actions change too
          return;
        }
        box.replaceWith(fresh);
        box = fresh;
        window.setTimeout(poll, 3000);
      })
      .catch(function () { window.setTimeout(poll, 10000); });
  }
  window.setTimeout(poll, 3000);
})();
