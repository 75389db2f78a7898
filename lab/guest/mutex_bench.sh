#!/bin/bash
# A mutex-heavy workload: OPS one-byte writes through a pipe, each write and read
# taking the pipe's mutex.  Writes its own run time (ns) to OUT, so the time a
# recorder takes to start is not counted.  Usage: mutex_bench.sh OPS OUT
set -eu
start=$(date +%s%N)
dd if=/dev/zero bs=1 count="$1" status=none | dd of=/dev/null bs=1 status=none
echo $(($(date +%s%N) - start)) >"$2"
