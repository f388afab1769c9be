// Filters of the landing grid (tag, route, free text). Plain JS; works from file:// or any static server.
(function () {
  function setup() {
    var grid = document.getElementById("mz-grid");
    if (!grid) return;
    var tag = document.getElementById("mz-filter-tag");
    var route = document.getElementById("mz-filter-route");
    var text = document.getElementById("mz-filter-text");
    var count = document.getElementById("mz-count");
    var cards = Array.prototype.slice.call(grid.querySelectorAll(".mz-card"));
    var params = new URLSearchParams(window.location.search);
    if (params.get("tag")) tag.value = params.get("tag");
    if (params.get("route")) route.value = params.get("route");
    function apply() {
      var t = tag.value, r = route.value, q = (text.value || "").trim().toLowerCase();
      var shown = 0;
      cards.forEach(function (c) {
        var ok = (!t || (" " + c.dataset.tags + " ").indexOf(" " + t + " ") >= 0) &&
                 (!r || (" " + c.dataset.routes + " ").indexOf(" " + r + " ") >= 0) &&
                 (!q || c.dataset.title.indexOf(q) >= 0 || c.dataset.id.indexOf(q) >= 0);
        c.hidden = !ok;
        if (ok) shown += 1;
      });
      count.textContent = shown + " of " + cards.length + " entries";
    }
    [tag, route].forEach(function (el) { el.addEventListener("change", apply); });
    text.addEventListener("input", apply);
    grid.addEventListener("click", function (ev) {
      var chip = ev.target.closest ? ev.target.closest(".mz-tag") : null;
      if (chip) { ev.preventDefault(); tag.value = chip.dataset.tag; apply(); }
    });
    apply();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup);
  else setup();
})();
