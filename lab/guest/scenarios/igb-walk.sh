#!/bin/bash
# Every path of the SR-IOV locking story, one after the other (nothing races, so
# nothing hangs on any kernel): enable and disable VFs, unbind the driver with VFs
# on, bind it again, remove the root port (and with it the PF) with VFs off.
DRIVER=igb
. "$(dirname "$0")/lib.sh"
write_as numvfs=2 2 "$PF_DIR/sriov_numvfs"
write_as numvfs=0 0 "$PF_DIR/sriov_numvfs"
write_as numvfs=2 2 "$PF_DIR/sriov_numvfs"
write_as pf-unbind "$PF" "$DRIVER_DIR/unbind"
write_as pf-bind "$PF" "$DRIVER_DIR/bind"
write_as rp-remove 1 "$RP_DIR/remove"
