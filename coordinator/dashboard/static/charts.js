// Draw every chart the page carries (Plotly figures as JSON, served with the page).
(function () {
  "use strict";
  document.querySelectorAll("script.plotly-figure").forEach(function (node) {
    var figure = JSON.parse(node.textContent);
    var target = document.getElementById(node.dataset.target);
    window.Plotly.newPlot(target, figure.data, figure.layout, {
      displaylogo: false,
      responsive: true,
      modeBarButtonsToRemove: ["sendDataToCloud"],
    });
  });
})();
