#!/bin/bash
# The two writes of rootport-remove-vs-numvfs, one after the other: no hang, but
# both lock orders are taken, so the inversion shows in the trace.  sriov_numvfs
# goes first: after the root port's remove the PF is gone.
. "$(dirname "$0")/lib.sh"
write_as numvfs=2 2 "$PF_DIR/sriov_numvfs"
echo 1500 >"$PARAMS/vf_remove_delay_ms"
write_as numvfs=0 0 "$PF_DIR/sriov_numvfs"
write_as rp-remove 1 "$RP_DIR/remove"
