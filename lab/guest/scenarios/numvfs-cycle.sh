#!/bin/bash
# Enable and disable the VFs a few times: the ordering and reentrancy baseline.
. "$(dirname "$0")/lib.sh"
for _ in 1 2 3; do
	write_as numvfs=2 2 "$PF_DIR/sriov_numvfs"
	write_as numvfs=0 0 "$PF_DIR/sriov_numvfs"
done
