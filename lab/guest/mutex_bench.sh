#!/bin/bash
# A mutex-heavy workload: OPS one-byte writes through a pipe, each write and read
# taking the pipe's mutex.  Writes "wall user sys" (seconds) of the workload alone
# to OUT, so the time a recorder takes to start is not counted and the CPU time
# shows the probes' cost in the workload's own tasks.  Usage: mutex_bench.sh OPS OUT
set -eu
TIMEFORMAT='%3R %3U %3S'
{ time dd if=/dev/zero bs=1 count="$1" status=none | dd of=/dev/null bs=1 status=none; } 2>"$2"
