"""The one exception the recorder raises for expected failures (one line, exit code 2)."""


class CollectorError(Exception):
    """Recording cannot start or finish; ``str()`` says why and what to do."""
