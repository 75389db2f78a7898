"""The analysis half: replays traces into lock-ordering graphs and findings."""
