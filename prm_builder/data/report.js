// Filters of the report page: by source, "PRM disagrees", "judge and MC disagree". Without JavaScript the form stays
// hidden and every row shows. The page's Content-Security-Policy allows this script by its hash and nothing else.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  var shown = document.getElementById("shown");
  var rows = Array.prototype.slice.call(document.querySelectorAll("article.row"));
  function checked(name) {
    var box = form.elements.namedItem(name);
    return box !== null && box.checked;
  }
  function apply() {
    var source = form.elements.namedItem("source").value;
    var prm = checked("prm");
    var judgeMc = checked("judge_mc");
    var visible = 0;
    rows.forEach(function (row) {
      var show = (source === "" || row.getAttribute("data-source") === source) &&
        (!prm || row.getAttribute("data-prm") === "1") &&
        (!judgeMc || row.getAttribute("data-judge-mc") === "1");
      row.hidden = !show;
      if (show) { visible += 1; }
    });
    shown.textContent = visible + " of " + rows.length + " rows shown";
  }
  form.addEventListener("change", apply);
  form.addEventListener("submit", function (event) { event.preventDefault(); });
  form.hidden = false;
  apply();
})();
