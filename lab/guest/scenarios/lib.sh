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

# write_as COMM VALUE FILE: write VALUE to FILE from a task called COMM (run
# under $WRAP, e.g. taskset, when set).
write_as() {
	ln -sf "$(command -v dd)" "/run/$1"
	note "$1: $2 > $3"
	printf %s "$2" | ${WRAP:-} "/run/$1" of="$3" conv=notrunc status=none
	note "$1: done"
}
# wait_in COMM FUNCTION [STATE]: wait until the task called COMM has FUNCTION in
# its kernel stack (it is inside that function, or blocked under it), and is in
# STATE (D: blocked) if given; its pid is left in $FOUND.
wait_in() {
	i=0
	while [ $i -lt 600 ]; do
		for pid in $(pgrep -x "$1"); do
			if grep -q "$2" "/proc/$pid/stack" 2>/dev/null &&
				{ [ -z "${3:-}" ] || [ "$(cut -d' ' -f3 "/proc/$pid/stat")" = "$3" ]; }; then
				note "$1 is in $2${3:+ (state $3)}"
				FOUND=$pid
				return 0
			fi
		done
		sleep 0.05
		i=$((i + 1))
	done
	note "$1 never reached $2"
	return 1
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
