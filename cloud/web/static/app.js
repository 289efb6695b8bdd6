
// Refresh the panels marked data-refresh while the page is visible. When the
// server is busy (429/503) wait at least its Retry-After, plus full jitter over
// a window that doubles with each busy answer (capped), so a crowd of open pages
// does not come back in step.
(function () {
  var every = 15000;
  var busyCount = 0;
  var notBefore = 0;
  function backoff(r) {
    var told = parseInt(r.headers.get("Retry-After") || "", 10);
    var floorMs = (isNaN(told) ? 1 : Math.max(0, told)) * 1000;
    busyCount = Math.min(busyCount + 1, 6);
    var windowMs = Math.min(every * Math.pow(2, busyCount - 1), 300000);
    notBefore = Date.now() + floorMs + Math.random() * windowMs;
  }
  function refresh() {
    if (document.visibilityState !== "visible") return;
    if (Date.now() < notBefore) return;
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      fetch(el.getAttribute("data-refresh"), {credentials: "same-origin"})
        .then(function (r) {
          if (r.status === 429 || r.status === 503) { backoff(r); return null; }
          if (r.ok) busyCount = 0;
          return r.ok ? r.text() : null;
        })
        .then(function (html) { if (html !== null) el.innerHTML = html; })
        .catch(function () {});
    });
  }
  setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
