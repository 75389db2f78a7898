"""``python -m lktrace``: the same as the ``lktrace`` command."""

from lktrace.cli import main

main()
