"""One finding identity: diff's text, JSON and HTML and the report's badges (issue 11, 3)."""

from __future__ import annotations

import json
import re

from conftest import locked, unlocked
from typer.testing import CliRunner

from lktrace.cli import app
from lktrace.replay.analyze import Options, analyze
from lktrace.replay.identity import finding_identity, lock_key
from lktrace.trace import read_trace


def ab_ba(a: str, b: str) -> list:
    rows = locked(1, a) + locked(1, b) + unlocked(1, b) + unlocked(1, a)
    return rows + locked(2, b) + locked(2, a) + unlocked(2, a) + unlocked(2, b)


def test_anonymous_locks_are_known_by_class_named_ones_by_name():
    assert lock_key("instance", "0xffff888101234000", "mutex@foo+0x12") == "mutex@foo"
    assert lock_key("instance", "pci:0000:01:00.0", "device_lock") == "pci:0000:01:00.0"
    assert lock_key("class", "device_lock", "device_lock") == "device_lock"


def test_same_inversion_on_other_addresses_is_the_same_finding(make_trace):
    boots = [
        analyze([read_trace(make_trace(ab_ba(x, y), f"{i}.parquet"))], Options())
        for i, (x, y) in enumerate((("0xffff888100001000", "0xffff888100002000"),
                                     ("0xffff8881aaaa5000", "0xffff8881aaaa6000")))
    ]  # fmt: skip
    [old], [new] = (b.inversions for b in boots)
    assert old.level == "instance" and old.cycle != new.cycle  # addresses differ
    assert finding_identity(old) == finding_identity(new)


def test_diff_and_diff_html_agree_across_two_boots(make_trace):
    """An inversion on anonymous locks, recorded on two boots: remaining in diff's
    text and JSON, and badged "in both" (not one gone, one new) in its HTML."""
    old = make_trace(ab_ba("0xffff888100001000", "0xffff888100002000"), "boot1.parquet")
    new = make_trace(ab_ba("0xffff8881aaaa5000", "0xffff8881aaaa6000"), "boot2.parquet")
    runner = CliRunner()
    text = runner.invoke(app, ["diff", str(old), str(new)]).output
    doc = json.loads(runner.invoke(app, ["diff", "-f", "json", str(old), str(new)]).output)
    html = runner.invoke(app, ["diff", "-f", "html", str(old), str(new)]).output
    assert doc["verdict"] == "same"
    assert doc["summary"]["inversions_remaining"] == 1
    assert not doc["inversions_fixed"] and not doc["inversions_introduced"]
    assert "REMAINING" in text.upper() and "verdict: same" in text
    assert '<span class="badge gone">0 gone</span>' in html
    assert '<span class="badge new">0 new</span>' in html
    assert '<span class="badge kept">1 in both</span>' in html
    inversions = re.findall(r"Inversion 1: [^<]*</a> <span class=\"badge (\w+)\"", html)
    assert inversions == ["kept", "kept"]  # the old column's and the new one's
