#!/bin/bash
# The PF's own `remove` races an unbind of its driver (the LKML report's pair,
# with the PF's sysfs remove in place of the root port's).
. "$(dirname "$0")/lib.sh"
write_as numvfs=2 2 "$PF_DIR/sriov_numvfs"
echo 1500 >"$PARAMS/vf_remove_delay_ms"
write_as pf-remove 1 "$PF_DIR/remove" &
sleep 0.3
write_as pf-unbind "$PF" /sys/bus/pci/drivers/lkpf/unbind &
wait
