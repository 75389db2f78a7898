#!/bin/bash
# The PF's own `remove` with its VFs enabled: remove_store takes the rescan lock,
# igb's .remove() disables SR-IOV, and where sriov_disable takes the rescan lock
# too (05703271c3cd, v6.17-v6.19) the writer waits for itself.
DRIVER=igb
. "$(dirname "$0")/lib.sh"
write_as numvfs=2 2 "$PF_DIR/sriov_numvfs"
write_as pf-remove 1 "$PF_DIR/remove"
