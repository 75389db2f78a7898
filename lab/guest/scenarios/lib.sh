# Sourced by the scenarios: find the PF bound to $DRIVER (lkpf unless the scenario
# sets it) and its root port, write sysfs files from tasks named for what they do
# (the name is the task's comm in the trace).
set -eu
DRIVER=${DRIVER:-lkpf}
DRIVER_DIR=/sys/bus/pci/drivers/$DRIVER
for d in "$DRIVER_DIR"/0000:*; do
	if [ -e "$d/sriov_totalvfs" ]; then PF=$(basename "$d"); break; fi
done
: "${PF:?no PF bound to $DRIVER}"
PF_DIR=/sys/bus/pci/devices/$PF
RP_DIR=$(dirname "$(readlink -f "$PF_DIR")")
PARAMS=/sys/module/$DRIVER/parameters

# note TEXT: a timestamped line in the scenario's log.
note() { echo "$(cut -d' ' -f1 /proc/uptime) $*"; }

# write_as COMM VALUE FILE: write VALUE to FILE from a task called COMM.
write_as() {
	ln -sf "$(command -v dd)" "/run/$1"
	note "$1: $2 > $3"
	printf %s "$2" | "/run/$1" of="$3" conv=notrunc status=none
	note "$1: done"
}
# rescan_pf: bring a removed PF back (its driver binds by itself) and wait for it.
rescan_pf() {
	write_as rescan 1 /sys/bus/pci/rescan
	i=0
	while [ ! -e "$DRIVER_DIR/$PF" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	[ -e "$DRIVER_DIR/$PF" ] || { note "PF $PF did not come back"; exit 1; }
}
note "PF $PF ($DRIVER), root port $(basename "$RP_DIR")"
touch /run/lab-scenario-started # the runner's timeout counts from here
