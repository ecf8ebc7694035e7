// Live updates without a build step: while a page is marked live, re-fetch its content as an
// HTML fragment and swap it in. Plus the alert "Acknowledge" buttons.
(function () {
  "use strict";
  var content = document.getElementById("content");
  var period = location.pathname.indexOf("/runs/") === 0 ? 1500 : 5000;

  function fragmentUrl() {
    var url = new URL(location.href);
    url.searchParams.set("fragment", "1");
    return url.toString();
  }

  function refresh() {
    if (!content || content.dataset.live !== "true" || document.hidden) { return; }
    fetch(fragmentUrl(), { headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var open = Array.prototype.map.call(
          content.querySelectorAll("details[open]"),
          function (d) { return d.closest("[data-step]") && d.closest("[data-step]").dataset.step; });
        content.innerHTML = html;
        open.forEach(function (step) {
          var row = content.querySelector('tr.detail[data-step="' + step + '"] details');
          if (row) { row.open = true; }
        });
        var summary = document.getElementById("run-summary");
        if (summary && summary.dataset.status !== "running") {
          content.dataset.live = "false";
          var flag = document.getElementById("live-flag");
          if (flag) { flag.hidden = true; }
        }
      })
      .catch(function () { /* the next tick retries */ });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.ack");
    if (!button) { return; }
    button.disabled = true;
    fetch("/api/alerts/" + button.dataset.alert + "/ack", { method: "POST" })
      .then(function (r) {
        if (r.ok) {
          var row = button.closest("tr");
          if (row) { row.remove(); }
        } else {
          button.disabled = false;
        }
      });
  });

  setInterval(refresh, period);
})();
