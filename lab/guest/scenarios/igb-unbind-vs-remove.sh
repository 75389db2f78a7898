#!/bin/bash
# The LKML report's diagram: unbind of the PF's driver (the PF's device_lock, then
# igb's .remove() -> pci_disable_sriov -> the rescan lock where sriov_disable takes
# it) races the PF's `remove` (the rescan lock, then the PF's device_lock).
#
# igb has no delay knob and its .remove() reaches pci_disable_sriov ~40 ms after
# the unbind took the device_lock, so the unbind is slowed from elsewhere: it
# runs at nice 19 on CPU 0 beside a busy loop at nice 0 (about 1.5 % of the
# CPU); once it is in igb_remove (holding the PF's device_lock) it is made
# SCHED_IDLE (about 0.3 %: the 40 ms take some 15 s) and the remove starts on
# CPU 1; once that is blocked in device_release_driver_internal (waiting for the
# device_lock under the rescan lock), the busy loop stops.
DRIVER=igb
. "$(dirname "$0")/lib.sh"
write_as numvfs=2 2 "$PF_DIR/sriov_numvfs"
taskset -c 0 sh -c 'while :; do :; done' &
hog=$!
WRAP="taskset -c 0 nice -n 19" write_as pf-unbind "$PF" "$DRIVER_DIR/unbind" &
wait_in pf-unbind igb_remove
chrt --idle -p 0 "$FOUND"
WRAP="taskset -c 1" write_as pf-remove 1 "$PF_DIR/remove" &
wait_in pf-remove device_release_driver_internal D || true
kill "$hog"
note "busy loop stopped"
wait
