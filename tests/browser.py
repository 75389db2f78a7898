"""Headless Chromium for the page tests: open a page, read what a page script measured.

Debian's ``chromium``, with the flags this closed network needs (no sync, no
component updates, no background fetches) and a fresh profile per test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``url``; ``args`` say what to do (--dump-dom, --screenshot=)."""
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def measured(tmp_path: Path, html: str, script: str, width: int = 1200) -> Any:
    """Open ``html`` in a ``width`` px window with ``script`` (which writes JSON into
    ``<pre id="measure">``) run last; return what it wrote."""
    page = tmp_path / "measured.html"
    page.write_text(html.replace("</body>", script + "</body>"), encoding="utf-8")
    proc = chromium(tmp_path, page.as_uri(), f"--window-size={width},2000", "--dump-dom")
    found = re.search(r'<pre id="measure">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stderr
    return json.loads(found.group(1))


# Per lock-order figure: where its node and edge labels are drawn, how tall, and at
# what font size once scaled; the whole graph is measured folded, then opened,
# then fitted to its box with its zoom button.
FIGURES = """<script>
(function () {
  function box(e) { var r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }
  function label(t) {
    var m = t.getScreenCTM(), scale = Math.sqrt(m.a * m.a + m.b * m.b);
    return {text: t.textContent.trim(), box: box(t),
            font: parseFloat(getComputedStyle(t).fontSize) * scale};
  }
  function labels(root, sel) { return Array.prototype.map.call(root.querySelectorAll(sel), label); }
  var out = {width: window.innerWidth, cycles: [], whole: []};
  document.querySelectorAll("figure.cycle").forEach(function (f) {
    var card = f.closest("article"), column = f.closest("section.column");
    out.cycles.push({card: card ? card.id : "", column: column ? box(column) : null,
                     box: box(f.querySelector(".scroll")),
                     nodes: labels(f, "g.node text"), edges: labels(f, "g.edge text")});
  });
  document.querySelectorAll("details.whole").forEach(function (d) {
    var folded = !d.open;
    d.open = true;
    var whole = {folded: folded, box: box(d.querySelector(".scroll")),
                 svg: box(d.querySelector("svg")), nodes: labels(d, "g.node text"),
                 zoom: d.querySelectorAll(".zoom button").length};
    Array.prototype.forEach.call(d.querySelectorAll(".zoom button"), function (b) {
      if (b.textContent !== "fit width") return;
      b.click();  // then the drawing is as wide as its box
      whole.fitted = [d.querySelector("svg").getBoundingClientRect().width,
                      d.querySelector(".scroll").clientWidth];
    });
    out.whole.push(whole);
  });
  var pre = document.createElement("pre");
  pre.id = "measure";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""
