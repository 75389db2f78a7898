"""The analysis half: replays a trace into lock-ordering graphs and findings (``lktrace.replay``)."""
