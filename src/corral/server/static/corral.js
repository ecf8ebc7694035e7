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
    // Never swap the page under someone typing a comment, an edit or an answer.
    var typing = document.activeElement && content.contains(document.activeElement) &&
      /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
    if (typing || content.querySelector("form.decide details[open]")) { return; }
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

  // Operator actions: decisions in the inbox, the kill switch and pauses. Errors from the API
  // (a 403 for a viewer's token, a 422 for an edit that does not fit) are shown next to the form.
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin"
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) { throw new Error(data.message || ("HTTP " + r.status)); }
        return data;
      });
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.classList.contains("decide")) {
      event.preventDefault();
      var action = event.submitter ? event.submitter.value : "approve";
      var body = { action: action, comment: form.elements.comment ? form.elements.comment.value : "" };
      var failed = form.querySelector(".decide-error");
      failed.textContent = "";
      try {
        if (action === "edit" || action === "answer") {
          body.value = JSON.parse(form.elements.value.value);
        } else if (action === "review") {
          body.value = { score: Number(form.elements.score.value), label: form.elements.label.value || null };
        }
      } catch (e) {
        failed.textContent = "not JSON: " + e.message;
        return;
      }
      post("/api/inbox/" + encodeURIComponent(form.dataset.request) + "/decide", body)
        .then(function () {
          var card = form.closest("section.request");
          if (card) { card.remove(); }
        })
        .catch(function (e) { failed.textContent = e.message; });
    } else if (form.id === "control-form") {
      event.preventDefault();
      var error = form.querySelector(".control-error");
      error.textContent = "";
      post("/api/controls", {
        action: form.elements.action.value,
        scope: form.elements.scope.value,
        name: form.elements.name.value,
        reason: form.elements.reason.value
      }).then(function () { location.reload(); })
        .catch(function (e) { error.textContent = e.message; });
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.control");
    if (!button) { return; }
    button.disabled = true;
    var body = { action: button.dataset.action, scope: button.dataset.scope };
    if (button.dataset.name) { body.name = button.dataset.name; }
    post("/api/controls", body)
      .then(function () { if (button.id !== "cancel-run") { location.reload(); } })
      .catch(function (e) { button.disabled = false; button.title = e.message; });
  });

  setInterval(refresh, period);
})();
