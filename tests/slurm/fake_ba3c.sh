#!/usr/bin/env bash
# A stand-in for the `ba3c` command (BA3C_BIN) that tests slurm/hetjob.sh without the
# services' cost: `init-run` is the real one; a service writes its log and address like the
# real one, records where it ran in RUN_DIR/fake/ROLE-INDEX, and runs until SIGTERM, when
# it records "stopped". FAKE_BA3C_FAIL=ROLE-INDEX makes that process fail at once,
# FAKE_BA3C_FAIL_ONCE=ROLE-INDEX only the first time it starts. RUN_DIR/fake/ROLE-INDEX.env
# keeps the variables the service saw that matter to it (Slurm's, knobs).
set -u
command=$1; shift
if [ "$command" = init-run ]; then exec "$FAKE_BA3C_REAL" init-run "$@"; fi
run_dir="" index=""
while [ $# -gt 0 ]; do
  case $1 in
    --run-dir) run_dir=$2; shift;;
    --index) index=$2; shift;;
  esac
  shift
done
name=$command-$index
mkdir -p "$run_dir/fake" "$run_dir/logs" "$run_dir/addresses"
log=$run_dir/logs/$name.log
echo "{\"event\": \"fake $name started on $SLURMD_NODENAME\"}" >> "$log"
echo "node=$SLURMD_NODENAME cpus=${SLURM_CPUS_PER_TASK:-?}" > "$run_dir/fake/$name"
env | grep -E '^(SLURM_JOB_ID|SLURM_PROCID|SLURMD_NODENAME|BA3C_LR|BA3C_NET_INTERFACE|PYTHONNOUSERSITE)=' \
  | sort > "$run_dir/fake/$name.env"
if [ "${FAKE_BA3C_FAIL_ONCE:-}" = "$name" ] && [ ! -e "$run_dir/fake/$name.failed" ]; then
  touch "$run_dir/fake/$name.failed"
  echo '{"event": "fake failure, once: the emulator hiccuped"}' >> "$log"
  exit 4
fi
if [ "${FAKE_BA3C_FAIL:-}" = "$name" ]; then
  echo '{"event": "fake failure: the emulator exploded"}' >> "$log"
  exit 3
fi
trap 'echo "stopped $(date +%s.%N)" >> "$run_dir/fake/$name"; exit 0' TERM USR1 USR2
if [ "$command" = paramserver ]; then
  echo "$(hostname):$((7000 + index))" > "$run_dir/addresses/$name"
fi
while :; do sleep 0.2; done
