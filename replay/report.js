// lktrace report: fold or unfold every stack at once, zoom the whole graph; mark the
// page as scripted.
(function () {
  "use strict";
  var header = document.querySelector("header");
  if (header && document.querySelector("details:not(.whole)")) {
    var tools = document.createElement("div");
    tools.className = "tools";
    [["Show all stacks", true], ["Hide all stacks", false]].forEach(function (b) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = b[0];
      button.addEventListener("click", function () {
        document.querySelectorAll("details:not(.whole)").forEach(function (d) { d.open = b[1]; });
      });
      tools.appendChild(button);
    });
    header.insertBefore(tools, header.firstChild);
  }
  // The whole graph is drawn at its natural size: buttons scale it, or fit it to the box.
  document.querySelectorAll("details.whole").forEach(function (d) {
    var svg = d.querySelector("svg"), box = d.querySelector(".scroll");
    if (!svg || !box) return;
    var w = svg.width.baseVal.value, h = svg.height.baseVal.value, z = 1;
    var bar = document.createElement("div"), shown = document.createElement("span");
    bar.className = "zoom";
    function zoom(to) {
      z = Math.min(4, Math.max(0.1, to));
      svg.style.width = w * z + "px";
      svg.style.height = h * z + "px";
      shown.textContent = Math.round(z * 100) + " %";
    }
    [["\u2212", function () { return z / 1.25; }], ["+", function () { return z * 1.25; }],
     ["1:1", function () { return 1; }],
     ["fit width", function () { return box.clientWidth / w; }]
    ].forEach(function (b) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = b[0];
      button.addEventListener("click", function () { zoom(b[1]()); });
      bar.appendChild(button);
    });
    bar.appendChild(shown);
    zoom(1);
    box.parentNode.insertBefore(bar, box);
  });
  document.documentElement.setAttribute("data-ready", "1");
})();
