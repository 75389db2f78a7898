// lktrace report: fold or unfold every stack at once; mark the page as scripted.
(function () {
  "use strict";
  var header = document.querySelector("header");
  if (header && document.querySelector("details")) {
    var tools = document.createElement("div");
    tools.className = "tools";
    [["Show all stacks", true], ["Hide all stacks", false]].forEach(function (b) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = b[0];
      button.addEventListener("click", function () {
        document.querySelectorAll("details").forEach(function (d) { d.open = b[1]; });
      });
      tools.appendChild(button);
    });
    header.insertBefore(tools, header.firstChild);
  }
  document.documentElement.setAttribute("data-ready", "1");
})();
