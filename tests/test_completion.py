"""Shell completion (typer's ``--install-completion``): TAB completes commands and options."""

from __future__ import annotations

import os
import subprocess
import sys


def complete(words: str) -> list[str]:
    """What bash completion gets for ``words`` (the last one being completed)."""
    env = {
        **os.environ,
        "_LKTRACE_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - 1),
    }
    done = subprocess.run(
        [sys.executable, "-m", "lktrace"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_tab_completes_commands_and_options():
    assert complete("lktrace ana") == ["analyze"]
    assert complete("lktrace re") == ["record", "recover", "report"]
    assert complete("lktrace record --back") == ["--backend"]


def test_the_completion_script_names_lktrace_even_from_python_m():
    done = subprocess.run(
        [sys.executable, "-m", "lktrace", "--show-completion", "bash"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "complete -o default -F _lktrace_completion lktrace" in done.stdout
