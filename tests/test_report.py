"""lktrace report: the self-contained HTML page, checked as text and in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from browser import chromium, console_errors, needs_chromium
from conftest import build_columns, locked, unlocked
from typer.testing import CliRunner

from lktrace.cli import app
from lktrace.replay import dot
from lktrace.replay.analyze import Options
from lktrace.replay.cards import MAX_CARDS
from lktrace.replay.dot import function
from lktrace.replay.figures import MAX_GRAPH_EDGES
from lktrace.replay.identity import finding_identity
from lktrace.replay.report import build_page, render_diff_html, render_html, write_html
from lktrace.replay.timeline import segments
from lktrace.sim import simulate
from lktrace.trace import TraceMeta, read_trace, write_trace

RED = (0xC6, 0x28, 0x28)


def page_of(tmp_path, scenario, **opts):
    return build_page(
        [read_trace(simulate(scenario, tmp_path / f"{scenario}.parquet"))], Options(**opts)
    )


# -- the page as text ---------------------------------------------------------


def test_page_is_self_contained(tmp_path, renderer):
    html = render_html(page_of(tmp_path, "stock-deadlock"))
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert not re.search(r"url\(\s*['\"]?https?:", html)
    assert "<link" not in html and "@import" not in html


def test_findings_in_analyze_order(tmp_path, renderer):
    page = page_of(tmp_path, "patched")
    html = render_html(page)
    titles = re.findall(r'<article class="finding \w+" id="r-f\d+"><h3>([^<]*)', html)
    a = page.analysis
    expected = len(a.deadlocks) + len(a.inversions) + len(a.guarded) + len(a.anomalies)
    assert len(titles) == expected
    kinds = [t.split(" ")[0].rstrip(":") for t in titles]
    assert kinds == ["Inversion"] * len(a.inversions) + [an.kind for an in a.anomalies]
    assert "reentrant" in kinds  # the patched rescan lock, depth 2


def test_graph_shows_the_cycle_in_red(tmp_path, renderer):
    page = page_of(tmp_path, "stock-deadlock")
    html = render_html(page)
    [graph] = re.findall(r'<section class="graphs">.*?</section>', html, re.S)
    [inv] = page.analysis.inversions
    for lock in inv.cycle:
        assert re.search(rf">\s*{re.escape(lock)}\s*</text>", graph)
    assert graph.count("#c62828") >= 4  # two edges and two nodes at least
    for w in inv.edges:  # edges labelled with the function that took the second lock
        assert re.search(rf">\s*{re.escape(function(w.caller))}\s*</text>", graph)


def test_timeline_per_finding(tmp_path, renderer):
    page = page_of(tmp_path, "stock-deadlock")
    html = render_html(page)
    cards = re.findall(r"<article .*?</article>", html, re.S)
    [dl] = page.analysis.deadlocks
    assert len(cards) == 2  # the deadlock, then its inversion
    for card in cards:
        assert card.count('<svg xmlns="http://www.w3.org/2000/svg" class="timeline"') == 1
        for t in dl.tasks:
            assert f">{t.comm}/{t.tid}</text>" in card  # a lane per blocked task
        assert card.count('class="never"') == 2  # both waits never granted
        assert 'class="mark closed"' in card
        assert "<details>" in card and "device_release_driver_internal" in card
    assert "deadlock: " in cards[0] and "cycle closed: " in cards[1]


def test_hand_built_inversion_and_anomaly(make_trace, tmp_path):
    rows = locked(1, "A") + locked(1, "B") + unlocked(1, "B") + unlocked(1, "A")
    rows += locked(2, "B") + locked(2, "A") + unlocked(2, "A") + unlocked(2, "B")
    rows += [*locked(3, "R"), (3, "attempt", "R")]
    page = build_page([read_trace(make_trace(rows))])
    html = render_html(page)
    assert "Possible unsafe locking scenario" in html and "*** DEADLOCK ***" in html
    assert "self_deadlock: task3/3 on R" in html
    # the self-deadlock is a deadlock that happened (one task) as well as an anomaly
    assert len(page.analysis.deadlocks) == 1
    cards = re.findall(r'<article class="finding err" id="r-f\d+">.*?</article>', html, re.S)
    assert any(">self_deadlock</text>" in card for card in cards)


def test_big_trace_gives_a_small_page(tmp_path):
    trace = read_trace(simulate("scale", tmp_path / "s.parquet", events=200_000, inversions=60))
    page = build_page([trace])
    assert len(page.analysis.inversions) > MAX_CARDS
    html = render_html(page)
    assert len(html) < 1_500_000
    assert html.count("<article ") == MAX_CARDS
    assert "Further findings, without timelines" in html
    # the whole graph was trimmed around the cycles; each finding drawn has its own figure
    assert f"orderings, {MAX_GRAPH_EDGES} shown</summary>" in html
    assert html.count('<figure class="cycle">') == MAX_CARDS


def test_cli_report(make_trace, tmp_path):
    rows = locked(1, "A") + locked(1, "B") + unlocked(1, "B") + unlocked(1, "A")
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(make_trace(rows)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "No lock-order inversions" in out.read_text()
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nope.parquet"), "-o", str(out)])
    assert bad.exit_code != 0


def test_diff_page_marks_gone_new_and_kept(tmp_path):
    stock, patched = page_of(tmp_path, "stock-deadlock"), page_of(tmp_path, "patched")
    html = render_diff_html(stock, patched, ["verdict: better"])
    assert "<p>verdict: better</p>" in html
    assert html.count('<section class="column">') == 2
    gone = {finding_identity(f) for f in stock.analysis.deadlocks}
    assert gone and not gone & {finding_identity(f) for f in patched.analysis.deadlocks}
    assert re.search(r"Deadlock 1 \(happened\).*?badge gone", html)
    assert re.search(r"reentrant: .*?badge new", html)
    # the class-level rescan/device_lock inversion is in both (the hotplug path keeps it)
    assert re.search(r"Inversion 1: .*?badge kept", html)
    ids = re.findall(r' id="([^"]+)"', html)
    assert len(ids) == len(set(ids))


# -- in the browser -----------------------------------------------------------

MEASURE = """<script>
(function () {
  var out = {graphs: [], timelines: []};
  document.querySelectorAll("details.whole").forEach(function (d) { d.open = true; });
  document.querySelectorAll("svg.lockgraph").forEach(function (s) {
    var r = s.getBoundingClientRect(), whole = !!s.closest("details.whole");
    var texts = Array.prototype.map.call(s.querySelectorAll("text"), function (t) {
      var b = t.getBBox(); return [t.textContent.trim(), b.width > 0 && b.height > 0];
    });
    out.graphs.push({rect: [r.left, r.top, r.width, r.height], texts: texts, whole: whole});
  });
  document.querySelectorAll("svg.timeline").forEach(function (s) {
    var r = s.getBoundingClientRect();
    var bars = s.querySelectorAll("g.hold rect, g.never rect").length;
    out.timelines.push({rect: [r.left, r.top, r.width, r.height], bars: bars});
  });
  var pre = document.createElement("pre");
  pre.id = "measure";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


@needs_chromium
def test_console_check_catches_a_broken_page(tmp_path):
    bad = write_html(tmp_path / "bad.html", "<html><body><script>nope();</script></body></html>")
    proc = chromium(tmp_path, bad.as_uri(), "--dump-dom")
    assert console_errors(proc.stderr), proc.stderr


@needs_chromium
@pytest.mark.parametrize("scenario", ["stock-deadlock", "patched"])
def test_opens_without_errors(tmp_path, renderer, scenario):
    path = write_html(tmp_path / "r.html", render_html(page_of(tmp_path, scenario)))
    proc = chromium(tmp_path, path.as_uri(), "--dump-dom")
    assert proc.returncode == 0, proc.stderr
    assert not console_errors(proc.stderr)
    assert 'data-ready="1"' in proc.stdout  # the page script ran to the end
    assert not re.search(r"<html[^>]*data-errors", proc.stdout)
    assert "Show all stacks" in proc.stdout


@needs_chromium
def test_diff_page_opens_without_errors(tmp_path):
    html = render_diff_html(page_of(tmp_path, "stock-deadlock"), page_of(tmp_path, "patched"))
    path = write_html(tmp_path / "d.html", html)
    proc = chromium(tmp_path, path.as_uri(), "--dump-dom")
    assert not console_errors(proc.stderr) and 'data-ready="1"' in proc.stdout


@needs_chromium
def test_screenshot_shows_graph_and_timeline(tmp_path, renderer):
    image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (dev extra)")
    page = page_of(tmp_path, "stock-deadlock")
    html = render_html(page).replace("</body>", MEASURE + "</body>")
    path = write_html(tmp_path / "r.html", html)
    dom = chromium(tmp_path, path.as_uri(), "--window-size=1200,3000", "--dump-dom")
    measure = json.loads(re.search(r'<pre id="measure">(.*?)</pre>', dom.stdout).group(1))
    [graph] = [g for g in measure["graphs"] if g["whole"]]
    cycles = [g for g in measure["graphs"] if not g["whole"]]
    assert len(cycles) == 2  # the deadlock's and the inversion's own figures
    for g in [graph, cycles[1]]:
        drawn = {text for text, visible in g["texts"] if visible}
        assert set(page.analysis.inversions[0].cycle) <= drawn
    assert len(measure["timelines"]) == 2 and all(t["bars"] >= 4 for t in measure["timelines"])

    shot = tmp_path / "shot.png"
    chromium(tmp_path, path.as_uri(), "--window-size=1200,3000", f"--screenshot={shot}")
    img = image.open(shot).convert("RGB")
    for box in [graph["rect"], cycles[1]["rect"], measure["timelines"][0]["rect"]]:
        left, top, width, height = (int(v) for v in box)
        assert width > 100 and height > 50
        crop = img.crop((left, top, left + width, top + height))
        colours = crop.getcolors(maxcolors=1 << 20)
        assert len(colours) > 20  # something is drawn, not a blank box
        red = sum(
            n for n, c in colours if all(abs(a - b) < 40 for a, b in zip(c, RED, strict=True))
        )
        assert red > 50  # the inverted edges / the closing mark and never-granted waits


def test_segments_merge_near_spans_and_break_far_ones():
    assert segments([(10_000, 20_000), (21_000, 30_000)]) == [(9_000, 30_900)]  # 10 % padding
    far = segments([(10_000, 20_000), (5_000_000_000, 5_000_010_000)])
    assert len(far) == 2 and far[0][1] < far[1][0]


def test_witnesses_far_apart_get_an_axis_break(tmp_path):
    rows = locked(1, "A") + locked(1, "B") + unlocked(1, "B") + unlocked(1, "A")
    rows += locked(2, "B") + locked(2, "A") + unlocked(2, "A") + unlocked(2, "B")
    cols = build_columns(rows)
    cols["ts_ns"] = [
        ts + (2_000_000_000 if tid == 2 else 0)
        for ts, tid in zip(cols["ts_ns"], cols["tid"], strict=True)
    ]
    page = build_page([read_trace(write_trace(tmp_path / "far.parquet", cols, TraceMeta()))])
    html = render_html(page)
    [card] = re.findall(r"<article .*?</article>", html, re.S)
    assert card.count('class="gap"') == 1 and "left out" in card
    # both tasks' holds are drawn wide enough to see, each in its own stretch of axis
    widths = [
        float(w)
        for w in re.findall(
            r'<rect x="[\d.]+" y="[\d.]+" width="([\d.]+)" height="13" rx="2"', card
        )
    ]
    assert len(widths) == 4 and min(widths) > 50


def test_several_traces_name_the_trace_of_each_lane(make_trace):
    rows_a = locked(1, "A") + locked(1, "B") + unlocked(1, "B") + unlocked(1, "A")
    rows_b = locked(1, "B") + locked(1, "A") + unlocked(1, "A") + unlocked(1, "B")
    a, b = make_trace(rows_a, "boot1.parquet"), make_trace(rows_b, "boot2.parquet")
    html = render_html(build_page([read_trace(a), read_trace(b)]))
    [card] = re.findall(r"<article .*?</article>", html, re.S)
    assert card.count(">task1/1<tspan") == 2
    assert ">boot1.parquet</tspan>" in card and ">boot2.parquet</tspan>" in card


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_awkward_lock_names_are_escaped(make_trace, tmp_path):
    odd = 'q"<b>&\\x'
    rows = locked(1, "A") + locked(1, odd) + unlocked(1, odd) + unlocked(1, "A")
    rows += locked(2, odd) + locked(2, "A") + unlocked(2, "A") + unlocked(2, odd)
    page = build_page([read_trace(make_trace(rows))])
    text = dot.to_dot(dot.lock_graph(page.state, page.analysis, "class"))
    proc = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0 and "q&quot;&lt;b&gt;&amp;\\x" in proc.stdout
    html = render_html(page)
    assert "<b>&" not in html and "q&quot;&lt;b&gt;&amp;\\x" in html


def test_cli_diff_html(tmp_path):
    old = simulate("stock-deadlock", tmp_path / "old.parquet")
    new = simulate("patched", tmp_path / "new.parquet")
    runner = CliRunner()
    doc = json.loads(runner.invoke(app, ["diff", "-f", "json", str(old), str(new)]).stdout)
    result = runner.invoke(app, ["diff", "--format", "html", str(old), str(new)])
    assert result.exit_code == (1 if doc["verdict"] == "worse" else 0), result.output
    html = result.stdout
    assert html.startswith("<!DOCTYPE html>") and html.count('<section class="column">') == 2
    assert f"<p>verdict: {doc['verdict']}" in html
    for inv in doc["inversions_remaining"]:  # the head lists diff's own matching
        arrow = " \u2192 ".join([*inv["cycle"], inv["cycle"][0]])
        assert f"<p>remaining: {arrow} ({inv['level']})</p>" in html
    assert doc["inversions_remaining"]
    assert re.search(r"Deadlock 1 \(happened\).*?badge gone", html)


def test_instance_graph_for_device_lock_cycles(make_trace):
    pf, vf = "pci:0000:01:00.0", "pci:0000:01:00.1"
    rows = locked(1, pf) + locked(1, vf) + unlocked(1, vf) + unlocked(1, pf)
    rows += locked(2, vf) + locked(2, pf) + unlocked(2, pf) + unlocked(2, vf)
    html = render_html(build_page([read_trace(make_trace(rows, probes=["mutex_lock"]))]))
    assert "No class ordering edges." in html  # no device_lock self-loop
    [figure] = re.findall(r'<figure class="graph whole">.*?</figure>', html, re.S)
    assert "instance graph" in figure and f">{pf}</text>" in figure and f">{vf}</text>" in figure
    [own] = re.findall(r'<figure class="cycle">.*?</figure>', html, re.S)
    assert f">{pf}</text>" in own and f">{vf}</text>" in own and "(instance graph)" in own
    assert "<th>probes</th><td>mutex_lock</td>" in html
