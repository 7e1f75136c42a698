// Live progress of an open round: server-sent events fed by the operator API's WatchRound.
(function () {
  "use strict";
  var table = document.getElementById("progress");
  if (!table || !table.dataset.events) { return; }
  var source = new EventSource(table.dataset.events);
  source.addEventListener("progress", function (event) {
    var p = JSON.parse(event.data);
    var state = document.getElementById("round-state");
    state.textContent = p.state;
    state.className = "state state-" + p.state;
    document.getElementById("answered").textContent = p.answered;
    p.carriers.forEach(function (c) {
      var row = table.querySelector('tr[data-carrier="' + CSS.escape(c.carrier_id) + '"]');
      if (!row) { return; }
      var cell = row.querySelector(".cstate");
      cell.textContent = c.state;
      cell.className = "cstate cstate-" + c.state;
    });
  });
  source.addEventListener("done", function () {
    source.close();
    window.location.reload();
  });
  source.addEventListener("failed", function (event) {
    source.close();
    var live = document.getElementById("live");
    if (live) { live.textContent = "Following stopped: " + JSON.parse(event.data).message; }
  });
})();
