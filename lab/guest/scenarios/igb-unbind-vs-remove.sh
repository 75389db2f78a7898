#!/bin/bash
# The LKML report's diagram: unbind of the PF's driver (the PF's device_lock, then
# igb's .remove() -> pci_disable_sriov -> the rescan lock where sriov_disable takes
# it) races the PF's `remove` (the rescan lock, then the PF's device_lock).  igb has
# no delay knob, so the race is tried again with the remove started at other points
# of the unbind, bringing the PF back in between, until a writer hangs or the
# rounds run out.
DRIVER=igb
. "$(dirname "$0")/lib.sh"
for delay in ${UNBIND_REMOVE_DELAYS:-0.02 0.05 0.01 0.1 0.03 0.07 0 0.15}; do
	write_as numvfs=2 2 "$PF_DIR/sriov_numvfs"
	write_as pf-unbind "$PF" "$DRIVER_DIR/unbind" &
	sleep "$delay"
	write_as pf-remove 1 "$PF_DIR/remove" &
	wait
	rescan_pf
done
