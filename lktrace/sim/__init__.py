"""Kernel-path simulator: realistic traces without a kernel, for tests, the demo and benchmarks.

``simulate(name, path, seed)`` writes the trace of one scenario (trace
format v1); :data:`SCENARIOS` lists them with a one-line description.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from lktrace.sim.scale import write_scale
from lktrace.sim.scenarios import PATH_SCENARIOS


class SimError(ValueError):
    """A scenario or parameter the simulator cannot run; ``str()`` is one line."""


@dataclass(frozen=True)
class Scenario:
    """A named scenario: what it shows and the parameters it takes."""

    name: str
    description: str
    #: ``write(path, seed, command, **params)``
    write: Callable[..., Path]
    params: tuple[str, ...] = ()


def _registry() -> dict[str, Scenario]:
    found = {
        name: Scenario(name, s.description, partial(s.write, name))
        for name, s in PATH_SCENARIOS.items()
    }
    found["scale"] = Scenario(
        "scale",
        "N tasks, M locks, E events in one global lock order plus K injected inversions "
        "between locks SPREAD ranks apart (numpy; for benchmarks)",
        write_scale,
        ("events", "tasks", "locks", "inversions", "spread"),
    )
    return found


SCENARIOS: dict[str, Scenario] = _registry()


def command_line(name: str, path: str | Path, seed: int, **params: int) -> str:
    """The ``lktrace simulate`` command that writes this trace."""
    args = ["lktrace", "simulate", name, "-o", str(path), "--seed", str(seed)]
    for key, value in params.items():
        args += [f"--{key}", str(value)]
    return shlex.join(args)


def simulate(name: str, path: str | Path, seed: int = 0, **params: int) -> Path:
    """Write scenario ``name`` with ``seed`` to ``path``; same seed, same file."""
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise SimError(f"unknown scenario {name!r}; 'lktrace simulate --list' lists them")
    unknown = sorted(set(params) - set(scenario.params))
    if unknown:
        takes = ", ".join("--" + p for p in scenario.params) or "no parameters"
        raise SimError(
            f"scenario {name!r} takes no {', '.join('--' + p for p in unknown)} (it takes {takes})"
        )
    if seed < 0:
        raise SimError("the seed must be 0 or more")
    path = Path(path)
    try:
        return scenario.write(path, seed, command_line(name, path, seed, **params), **params)
    except ValueError as e:
        raise SimError(f"{name}: {e}") from e
