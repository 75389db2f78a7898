#!/bin/bash
# Deadlocks: the root port's `remove` (pci_rescan_remove_lock, then the PF's
# device_lock) races the PF's `sriov_numvfs` = 0 (the PF's device_lock, then
# pci_rescan_remove_lock).  VF remove sleeps so the second writer comes in between.
. "$(dirname "$0")/lib.sh"
write_as numvfs=2 2 "$PF_DIR/sriov_numvfs"
echo 1500 >"$PARAMS/vf_remove_delay_ms"
write_as rp-remove 1 "$RP_DIR/remove" &
sleep 0.3
write_as numvfs=0 0 "$PF_DIR/sriov_numvfs" &
wait
