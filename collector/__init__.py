"""The recording half: loads the probes, drains events, writes traces (``lktrace.collector``)."""
