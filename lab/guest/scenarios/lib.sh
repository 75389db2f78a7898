# Sourced by the scenarios: find the lkpf PF and its root port, write sysfs files
# from tasks named for what they do (the name is the task's comm in the trace).
set -eu
for d in /sys/bus/pci/drivers/lkpf/0000:*; do
	if [ -e "$d/sriov_totalvfs" ]; then PF=$(basename "$d"); break; fi
done
: "${PF:?no PF bound to lkpf}"
PF_DIR=/sys/bus/pci/devices/$PF
RP_DIR=$(dirname "$(readlink -f "$PF_DIR")")
PARAMS=/sys/module/lkpf/parameters

# note TEXT: a timestamped line in the scenario's log.
note() { echo "$(cut -d' ' -f1 /proc/uptime) $*"; }

# write_as COMM VALUE FILE: write VALUE to FILE from a task called COMM.
write_as() {
	ln -sf "$(command -v dd)" "/run/$1"
	note "$1: $2 > $3"
	printf %s "$2" | "/run/$1" of="$3" conv=notrunc status=none
	note "$1: done"
}
note "PF $PF, root port $(basename "$RP_DIR")"
touch /run/lab-scenario-started # the runner's timeout counts from here
