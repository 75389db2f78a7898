"""Per-task timelines of lock holds around one finding, drawn as SVG.

One lane per task; inside it, a bar per hold, stacked by how many locks the
task already held, a hatched bar for the wait before each acquisition, and a
hatched bar with a red edge for an attempt never granted.  Times are from
the start of the task's trace, so tasks of several traces share an axis.
Only holds in the spans around the finding are drawn, at most ``max_bars``
per task; spans far apart in time (two witnesses a second apart) each get
their own stretch of axis, with a break between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape

import numpy as np

from lktrace.console import fmt_ns
from lktrace.replay.state import ReplayState

GUTTER = 150  # task labels
PLOT_W = 760
ROW_H = 16
LANE_PAD = 10
TOP = 40  # mark labels: the closing one on the first row, others below
AXIS_H = 26
BREAK = 14  # px of axis for the time left out between two spans
GREY = "#bdbdbd"


@dataclass
class Mark:
    """A moment to point at: ``strong`` for the one that closed the cycle."""

    ts: int  # absolute, in the trace of ``task``'s file
    label: str
    file: int = 0
    strong: bool = False


class Timelines:
    """Indexes a :class:`ReplayState` once so each finding's timeline is cheap to cut out."""

    def __init__(self, state: ReplayState) -> None:
        self.state = state
        ev, h = state.events, state.holds
        self.by_task = np.argsort(h.task, kind="stable")
        self.bounds = np.searchsorted(h.task[self.by_task], np.arange(len(ev.tasks) + 1))
        self.file_start = np.full(len(ev.traces), np.iinfo(np.int64).max)
        np.minimum.at(self.file_start, ev.file, ev.ts)
        self.pending = {int(ev.task[p]): int(p) for p in state.replay.pending}
        paths = [str(t.path) for t in ev.traces]
        self.task_index = {
            (paths[f], int(tid)): i
            for i, (f, tid) in enumerate(zip(ev.tasks["file"], ev.tasks["tid"], strict=True))
        }

    def task(self, file: str, tid: int) -> int | None:
        """The task index of ``tid`` in trace ``file``."""
        return self.task_index.get((file, tid))

    def file_of(self, task: int) -> int:
        return int(self.state.events.tasks["file"].iat[task])

    def rel(self, task: int, ts: int) -> int:
        """``ts`` as time since the start of ``task``'s trace."""
        return int(ts - self.file_start[self.file_of(task)])

    def _holds(self, task: int) -> np.ndarray:
        return self.by_task[self.bounds[task] : self.bounds[task + 1]]

    def around(self, task: int, ts: int) -> tuple[int, int]:
        """The span (relative) of the holds and waits of ``task`` going on at ``ts``."""
        h = self.state.holds
        idx = self._holds(task)
        on = idx[(h.attempt_ts[idx] <= ts) & (h.released_ts[idx] >= ts)]
        lo = min([ts, *h.attempt_ts[on].tolist()])
        hi = max([ts, *h.released_ts[on].tolist()])
        if task in self.pending and self.state.events.ts[self.pending[task]] <= ts:
            hi = max(hi, int(self.state.replay.file_end_ts[self.file_of(task)]))
        return self.rel(task, lo), self.rel(task, hi)

    def svg(
        self,
        tasks: list[int],
        spans: list[tuple[int, int]],
        marks: list[Mark],
        colour: Callable[[str, str], str | None],
        uid: str,
        max_bars: int = 40,
    ) -> str:
        """Lanes for ``tasks`` over ``spans`` (relative ns, one per thing to show);
        ``colour(class, name)`` picks the colour of the locks that matter to the
        finding (None: grey).  Spans far apart get their own stretch of axis."""
        segs = segments(spans)
        share = (PLOT_W - BREAK * (len(segs) - 1)) / len(segs)
        t_pts = np.array([t for seg in segs for t in seg], np.float64)
        x_pts = np.array(
            [GUTTER + i * (share + BREAK) + k * share for i in range(len(segs)) for k in (0, 1)]
        )

        def x(t: float) -> float:
            return float(np.interp(t, t_pts, x_pts))

        lanes = [self._lane(t, segs, colour, max_bars) for t in tasks]
        height = TOP + sum(lane[0] for lane in lanes) + AXIS_H
        width = GUTTER + PLOT_W + 20
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
            f'<defs><pattern id="{uid}-hatch" patternUnits="userSpaceOnUse" width="6" '
            f'height="6" patternTransform="rotate(45)"><rect width="6" height="6" '
            f'fill="#fff"/><line x1="0" y1="0" x2="0" y2="6" stroke="#616161" '
            f'stroke-width="2"/></pattern><pattern id="{uid}-gap" patternUnits="userSpaceOnUse" '
            f'width="4" height="4"><rect width="4" height="4" fill="#eceff1"/><circle cx="2" '
            f'cy="2" r="0.8" fill="#9e9e9e"/></pattern></defs>',
        ]
        y = TOP
        for task, (lane_h, bars) in zip(tasks, lanes, strict=True):
            row = self.state.events.tasks.iloc[task]
            label = escape(f"{row.comm}/{row.tid}")
            if len(self.state.events.traces) > 1:  # tids repeat across boots: name the trace
                name = self.state.events.traces[self.file_of(task)].path.name
                label += f'<tspan x="8" dy="13" class="file">{escape(name)}</tspan>'
            out.append(
                f'<g class="lane"><rect x="0" y="{y}" width="{width}" height="{lane_h}" '
                f'fill="{"#fafafa" if tasks.index(task) % 2 else "#fff"}"/>'
                f'<text x="8" y="{y + lane_h / 2 + 4:.1f}" class="task">{label}</text>'
            )
            for b in bars:
                out.append(b.svg(x, y, uid))
            out.append("</g>")
            y += lane_h
        for i in range(1, len(segs)):  # a break in the axis between far-apart spans
            xb = GUTTER + i * (share + BREAK) - BREAK
            out.append(
                f'<rect class="gap" x="{xb:.1f}" y="{TOP - 4}" width="{BREAK}" '
                f'height="{y - TOP + 12}" fill="url(#{uid}-gap)"><title>'
                f"{fmt_ns(segs[i][0] - segs[i - 1][1])} left out</title></rect>"
            )
        for seg in segs:
            out.append(self._axis(x, *seg, y, len(segs)))
        for i, m in enumerate(sorted(marks, key=lambda m: m.strong)):
            t = m.ts - int(self.file_start[m.file])
            colour_m = "#c62828" if m.strong else "#424242"
            xm = x(t)
            anchor = "end" if xm + 6 * len(m.label) > width else "start"
            dash = "" if m.strong else ' stroke-dasharray="3,3"'
            nudge = -4 if anchor == "end" else 4
            out.append(
                f'<g class="mark{" closed" if m.strong else ""}">'
                f'<line x1="{xm:.1f}" y1="{TOP - 4}" x2="{xm:.1f}" y2="{y}" stroke="{colour_m}" '
                f'stroke-width="{2 if m.strong else 1}"{dash}/>'
                f'<text x="{xm + nudge:.1f}" y="{12 + 11 * (0 if m.strong else 1 + i % 2):.0f}" '
                f'text-anchor="{anchor}" fill="{colour_m}" class="marklabel">'
                f"{escape(m.label)}</text></g>"
            )
        out.append("</svg>")
        return "\n".join(out)

    def _lane(self, task, segs, colour, max_bars) -> tuple[int, list[_Bar]]:
        ev, h = self.state.events, self.state.holds
        base = int(self.file_start[self.file_of(task)])
        idx = self._holds(task)
        start, end = h.attempt_ts[idx] - base, h.released_ts[idx] - base
        shown = np.zeros(len(idx), bool)
        for lo, hi in segs:
            shown |= (start <= hi) & (end >= lo)
        idx = idx[shown]
        cls = [ev.classes[c] for c in h.cls[idx]]
        name = [ev.names[ev.inst_name[i]] for i in h.inst[idx]]
        fill = [colour(c, n) for c, n in zip(cls, name, strict=True)]
        if len(idx) > max_bars:  # the finding's locks first, then the longest holds
            span = h.released_ts[idx] - h.attempt_ts[idx]
            keep = sorted(range(len(idx)), key=lambda i: (fill[i] is None, -span[i]))[:max_bars]
            keep.sort()
            idx, cls, name, fill = (idx[keep], *([v[i] for i in keep] for v in (cls, name, fill)))
        order = np.argsort(h.acquired_ts[idx], kind="stable")
        bars: list[_Bar] = []
        open_ends: list[int] = []
        for i in order.tolist():
            a, r = int(h.acquired_ts[idx[i]] - base), int(h.released_ts[idx[i]] - base)
            open_ends = [e for e in open_ends if e > a]
            level = len(open_ends)
            open_ends.append(r)
            what = f"{cls[i]} {name[i]}" if cls[i] != name[i] else name[i]
            wait = int(h.acquired_ts[idx[i]] - h.attempt_ts[idx[i]])
            tip = f"{what}: held {fmt_ns(r - a)}"
            if wait:
                tip += f" after waiting {fmt_ns(wait)}"
            if not h.released[idx[i]]:
                tip += ", still held at the end"
            bars.append(_Bar(a - wait, a, r, level, name[i], fill[i] or GREY, tip))
        if task in self.pending:
            p = self.pending[task]
            a = int(ev.ts[p] - base)
            end = int(self.state.replay.file_end_ts[ev.file[p]] - base)
            level = len([e for e in open_ends if e > a])
            lock = ev.names[ev.name[p]]
            c = colour(ev.classes[ev.cls[p]], lock)
            tip = f"{lock}: waiting from {fmt_ns(a)} to the end, never granted"
            bars.append(_Bar(a, end, end, level, lock, c or GREY, tip, never=True))
        levels = max((b.level for b in bars), default=0) + 1
        return levels * ROW_H + 2 * LANE_PAD, bars

    @staticmethod
    def _axis(x, lo: int, hi: int, y: float, parts: int) -> str:
        span = max(hi - lo, 1)
        most = max(7 // parts, 2)
        step = 10 ** int(np.floor(np.log10(span / most))) if span > most else 1
        for mult in (1, 2, 5, 10):
            if span / (step * mult) <= most:
                step *= mult
                break
        ticks = range((lo + step - 1) // step * step, hi + 1, step)
        out = [
            f'<g class="axis"><line x1="{x(lo):.1f}" y1="{y}" x2="{x(hi):.1f}" y2="{y}" '
            f'stroke="#9e9e9e"/>'
        ]
        for t in ticks:
            out.append(
                f'<line x1="{x(t):.1f}" y1="{y}" x2="{x(t):.1f}" y2="{y + 4}" stroke="#9e9e9e"/>'
                f'<text x="{x(t):.1f}" y="{y + 16}" text-anchor="middle">{fmt_ns(t)}</text>'
            )
        out.append("</g>")
        return "".join(out)


def segments(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Padded ``spans``, merged unless the gap between them dwarfs what they show."""
    padded = sorted((max(lo - max((hi - lo) // 10, 500), 0), hi + max((hi - lo) // 10, 500))
                    for lo, hi in spans)  # fmt: skip
    out = [padded[0]]
    for lo, hi in padded[1:]:
        last_lo, last_hi = out[-1]
        shown = (last_hi - last_lo) + (hi - lo)
        if lo - last_hi <= shown:
            out[-1] = (last_lo, max(last_hi, hi))
        else:
            out.append((lo, hi))
    return out


@dataclass
class _Bar:
    attempt: int  # relative ns
    acquired: int
    released: int
    level: int
    label: str
    fill: str
    tip: str
    never: bool = False  # an attempt never granted

    def svg(self, x, lane_y: float, uid: str) -> str:
        y = lane_y + LANE_PAD + self.level * ROW_H
        h = ROW_H - 3
        kind = "never" if self.never else "hold"
        parts = [f'<g class="{kind}"><title>{escape(self.tip)}</title>']
        if self.acquired > self.attempt or self.never:
            x0, x1 = x(self.attempt), x(self.acquired)
            stroke = "#c62828" if self.never else self.fill
            parts.append(
                f'<rect class="wait" x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 2):.1f}" '
                f'height="{h}" fill="url(#{uid}-hatch)" stroke="{stroke}" '
                f'stroke-width="{2 if self.never else 1}"/>'
            )
        if not self.never:
            x0, x1 = x(self.acquired), x(self.released)
            w = max(x1 - x0, 2)
            parts.append(
                f'<rect x="{x0:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h}" rx="2" '
                f'fill="{self.fill}"/>'
            )
            if w > 7 * len(self.label) + 8:
                parts.append(
                    f'<text x="{x0 + 4:.1f}" y="{y + h - 3:.1f}" class="barlabel">'
                    f"{escape(self.label)}</text>"
                )
        elif x(self.released) - x(self.attempt) > 7 * len(self.label) + 8:
            parts.append(
                f'<text x="{x(self.attempt) + 4:.1f}" y="{y + h - 3:.1f}" class="barlabel">'
                f"{escape(self.label)} (never granted)</text>"
            )
        parts.append("</g>")
        return "".join(parts)
