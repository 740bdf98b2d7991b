// An invitation link carries its token in the fragment (/hubs/<id>/join/#<token>), which the
// browser never sends to a server: put it into the page's form, take it out of the address
// bar (and so out of the history), and post it.
(function () {
  "use strict";
  var form = document.getElementById("invitation-open");
  var field = document.getElementById("invitation-token");
  var token = window.location.hash.replace(/^#/, "");
  if (!form || !field || !token) {
    return;
  }
  field.value = token;
  if (window.history && window.history.replaceState) {
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  form.submit();
})();
