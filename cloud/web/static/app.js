
// Refresh the panels marked data-refresh while the page is visible.
(function () {
  var every = 15000;
  function refresh() {
    if (document.visibilityState !== "visible") return;
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      fetch(el.getAttribute("data-refresh"), {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) el.innerHTML = html; })
        .catch(function () {});
    });
  }
  setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
