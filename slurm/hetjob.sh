#!/usr/bin/env bash
# ba3c on Slurm: one heterogeneous job, one component per service.
#
#   sbatch slurm/hetjob.sh [ba3c flags...]          e.g.  sbatch slurm/hetjob.sh --lr 0.0005
#
# Component 0 runs the parameter-server shards, 1 the learners, 2 the simulator pools and
# 3 the evaluator. Each component is one `srun --het-group=N` step; each of its tasks runs
# one process of that service with --index $SLURM_PROCID, in that service's container (or
# the installed `ba3c` command when there is no container runtime). Services find each
# other through the run directory (addresses/), so any node placement works.
#
# COUNTS AND CORES: the #SBATCH blocks below, one per component (--ntasks = how many
#   processes, --cpus-per-task = cores each). The script passes --ps, --learners and
#   --pools from the task counts, so they always match the job. Override at submission,
#   one `:`-separated block per component, e.g. 4 shards, 8 learners, 16 pools:
#     sbatch --ntasks=4 : --ntasks=8 : --ntasks=16 : --ntasks=1 slurm/hetjob.sh
#   Without the evaluator: delete the last `hetjob` block (or BA3C_EVAL_NODE=false).
#
# RESOURCES per component: add --mem, --partition, --account, --gpus-per-task (or --gres)
#   to that component's block, here or at submission, e.g. learners on a GPU partition:
#     sbatch -p cpu --ntasks=2 : -p gpu -A mygpus --ntasks=2 --gpus-per-task=1 --mem=32G \
#       : -p cpu --ntasks=4 : -p cpu --ntasks=1 slurm/hetjob.sh
#   (then BA3C_CONTAINER_ARGS_LEARNER=--nv; see slurm/README.md "GPUs").
#
# HYPER-PARAMETERS: any `ba3c` flag given to this script (sbatch slurm/hetjob.sh --lr 3e-4
#   -b 64), or any BA3C_<KNOB> variable in the submitting shell (BA3C_LR=3e-4; sbatch
#   exports the environment). Every knob, its flag and its variable: `ba3c config --help`.
#   Under `sbatch --export=NONE` (no variables reach the job) give them as leading
#   arguments instead: sbatch --export=NONE slurm/hetjob.sh BA3C_RUN_DIR=/scratch/r1 --lr 3e-4
#   Defaults of this script where they differ from ba3c's: --env ALE/Breakout-v5,
#   --use_sync with --replicas_to_aggregate = number of learners, --record_node.
#   The first job writes RUN_DIR/config.toml; a resumed job keeps it (flags and variables
#   given again still apply on top of it).
#   NETWORK: BA3C_NET_INTERFACE=ib0 makes every node bind and advertise its ib0 address;
#   BA3C_HOST / BA3C_ADVERTISE_HOST set them directly (slurm/README.md "Networks").
#
# RUN DIRECTORY (on a filesystem every node sees):
#   BA3C_RUN_DIR          the run directory (default BA3C_EXPERIMENTS_DIR/JOBNAME-JOBID).
#                         Submit again with the same BA3C_RUN_DIR to resume a run. One job
#                         at a time: RUN_DIR/lock (flock) refuses a second job on it
#                         (a requeued job waits up to BA3C_LOCK_WAIT s, default 120, for
#                         its previous run to let go).
#   BA3C_EXPERIMENTS_DIR  where new run directories go (default SUBMIT_DIR/runs).
#
# CONTAINERS:
#   BA3C_CONTAINER        apptainer | singularity | none (default: apptainer if found, else
#                         singularity if found, else none = the installed package).
#   BA3C_IMAGES           folder of paramserver.sif learner.sif simulator.sif evaluator.sif
#                         (default SUBMIT_DIR/containers; build them with containers/build.sh).
#   BA3C_IMAGE_<ROLE>     one service's image, e.g. BA3C_IMAGE_LEARNER=~/my-learner.sif.
#   BA3C_CONTAINER_ARGS   extra `apptainer exec` options for every service, e.g. --cleanenv.
#   BA3C_CONTAINER_ARGS_<ROLE>  more for one service, e.g. BA3C_CONTAINER_ARGS_LEARNER=--nv.
#                         Every task passes its SLURM_*, BA3C_* and PYTHONNOUSERSITE=1 in as
#                         APPTAINERENV_*/SINGULARITYENV_*, so --cleanenv/--containall keep
#                         addressing and knobs working.
#   BA3C_BIN              the ba3c command (default `ba3c`; a command line, split on spaces).
#   BA3C_BIN_<ROLE>       one service's command, e.g. BA3C_BIN_LEARNER="my-learner", called
#                         as `CMD learner --run-dir D --index I [flags]`.
#   BA3C_BIN_INIT, BA3C_IMAGE_INIT  what runs `ba3c init-run` (default BA3C_BIN, and in a
#                         container our paramserver.sif): never a replacement's command.
#
# TIME AND STOPPING (slurm/README.md "Stopping" says what to type):
#   BA3C_MINUTES          end the run after this many minutes (decimals allowed; 0 = run
#                         until the time limit or a stop). The job then exits 0. Default 60.
#   BA3C_STOP_GRACE       seconds each of pools, evaluator, learners has to stop (default 20).
#   BA3C_SHARD_STOP_GRACE seconds the shards have for their final checkpoint (default 60).
#                         3 x 20 + 60 = 120 s fit the --signal lead time below (150 s).
#   BA3C_START_TIMEOUT    seconds the shards have to publish their addresses (default 600).
#   BA3C_MAX_RESTARTS     times one task is restarted after it crashes (default 3; a shard
#                         restarts from its newest checkpoint). One pool or the evaluator
#                         that gives up does not end the run.
#   The ordered stop (pools, evaluator, learners, then the shards after a final checkpoint)
#   runs on USR1 to this script: --signal=B:USR1@150 before the time limit (and at
#   preemption where the site sets preempt_send_user_signal; a preempted job is requeued),
#   or `scancel --batch --signal=USR1 JOBID` by hand; the job then exits 0 (COMPLETED).
#   `scancel --batch --signal=USR2 JOBID`: the same stop, then the job requeues itself.
#   Plain `scancel JOBID` cannot stop in order: Slurm sends SIGTERM to every process at
#   once (shards still checkpoint within KillWait) and srun answers SIGTERM by asking for
#   SIGKILL of its tasks (too late to matter on Slurm 22.05; other versions may differ).
#   A requeued job (--requeue below, `scontrol requeue`) or a new job with the same
#   BA3C_RUN_DIR resumes: each shard restores its newest checkpoint when it starts.
#
# OUTPUT: the job's output file (%x-%j.out) gets one line per event; a failed component
#   fails the job and names the component, the task and the tail of its log
#   (RUN_DIR/logs/ROLE-INDEX.log).
#
#SBATCH --job-name=ba3c
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --time=01:10:00
#SBATCH --signal=B:USR1@150
#SBATCH --ntasks=2 --cpus-per-task=1 --mem=4G   # component 0: paramserver shards
#SBATCH hetjob
#SBATCH --ntasks=2 --cpus-per-task=4 --mem=8G   # component 1: learners (TensorFlow uses the cores)
#SBATCH hetjob
#SBATCH --ntasks=4 --cpus-per-task=2 --mem=4G   # component 2: simulator pools
#SBATCH hetjob
#SBATCH --ntasks=1 --cpus-per-task=2 --mem=4G   # component 3: evaluator (plays, records videos)

set -uo pipefail
# A stop signal that comes before the handlers below exist (a job started close to its time
# limit) must not kill this shell (USR1's default action): note it, act on it once they do.
pending=""
trap 'pending=${pending:-usr1}' USR1
trap 'pending=${pending:-usr2}' USR2

ROLES=(paramserver learner simulator evaluator)   # index = het component
STOP_ORDER=(2 3 1 0)
SIGNAL_LEAD=150   # the --signal lead time above: the stop graces must fit in it

say() { printf 'ba3c hetjob %(%H:%M:%S)T: %s\n' -1 "$*"; }
die() { local code=$1; shift; say "ERROR: $*"; exit "$code"; }  # die CODE MESSAGE...

[ -n "${SLURM_JOB_ID:-}" ] || die 2 "run me with sbatch: sbatch slurm/hetjob.sh [flags]"
n_components=${SLURM_HET_SIZE:-1}
[ "$n_components" -ge 3 ] || die 2 "need at least 3 het components (shards, learners," \
  "pools); this job has $n_components: keep the #SBATCH hetjob blocks"

# -- settings -------------------------------------------------------------------------
# BA3C_*=VALUE leading arguments: settings that `sbatch --export=NONE` would not carry.
while [ $# -gt 0 ] && [[ $1 =~ ^BA3C_[A-Z0-9_]+= ]]; do export "${1?}"; shift; done
# Steps inherit the batch script's environment even when sbatch had --export=NONE (which
# sets SLURM_EXPORT_ENV=NONE for every srun: tasks would start without PATH or settings).
export SLURM_EXPORT_ENV=ALL
submit_dir=${SLURM_SUBMIT_DIR:-$PWD}
BA3C_EXPERIMENTS_DIR=${BA3C_EXPERIMENTS_DIR:-$submit_dir/runs}
RUN_DIR=${BA3C_RUN_DIR:-$BA3C_EXPERIMENTS_DIR/${SLURM_JOB_NAME:-ba3c}-$SLURM_JOB_ID}
BA3C_IMAGES=${BA3C_IMAGES:-$submit_dir/containers}
RUN_DIR=$(realpath -m "$RUN_DIR"); BA3C_IMAGES=$(realpath -m "$BA3C_IMAGES")
BA3C_MINUTES=${BA3C_MINUTES:-60}
BA3C_STOP_GRACE=${BA3C_STOP_GRACE:-20}
BA3C_SHARD_STOP_GRACE=${BA3C_SHARD_STOP_GRACE:-60}
BA3C_START_TIMEOUT=${BA3C_START_TIMEOUT:-600}
export BA3C_MAX_RESTARTS=${BA3C_MAX_RESTARTS:-3}
for knob in BA3C_STOP_GRACE BA3C_SHARD_STOP_GRACE BA3C_START_TIMEOUT BA3C_MAX_RESTARTS; do
  [[ ${!knob} =~ ^[0-9]+$ ]] || die 2 "$knob must be a whole number of seconds/times, got '${!knob}'"
done
runtime=${BA3C_CONTAINER:-}
if [ -z "$runtime" ]; then
  runtime=none
  for candidate in apptainer singularity; do
    if command -v "$candidate" >/dev/null; then runtime=$candidate; break; fi
  done
fi
case $runtime in
  apptainer|singularity)
    command -v "$runtime" >/dev/null || die 2 "BA3C_CONTAINER=$runtime, but no $runtime on PATH";;
  none) ;;
  *) die 2 "BA3C_CONTAINER must be apptainer, singularity or none, got '$runtime'";;
esac

count() { local v="SLURM_NTASKS_HET_GROUP_$1"; echo "${!v:-0}"; }
n_ps=$(count 0); n_learners=$(count 1); n_pools=$(count 2)
counts=(--ps "$n_ps" --learners "$n_learners" --pools "$n_pools")

# The command that runs ROLE: container runtime + image + ba3c command, as an array.
launcher() {
  local role=$1 upper=${1^^} bin image
  local bin_var="BA3C_BIN_$upper" image_var="BA3C_IMAGE_$upper"
  read -ra bin <<< "${!bin_var:-${BA3C_BIN:-ba3c}}"
  if [ "$runtime" = none ]; then
    local what="the $role command"
    [ "$role" = init ] && what="the ba3c command (init-run)"
    command -v "${bin[0]}" >/dev/null || die 2 "$what '${bin[0]}' is not on" \
      "PATH (under sbatch --export=NONE give it as a leading argument:" \
      "sbatch slurm/hetjob.sh BA3C_BIN=/path/to/bin/ba3c ...)"
    LAUNCH=("${bin[@]}")
  else
    local default_image=$BA3C_IMAGES/$role.sif
    [ "$role" = init ] && default_image=$BA3C_IMAGES/paramserver.sif  # ours: has ba3c
    image=${!image_var:-$default_image}
    [ -e "$image" ] || die 2 "no image for the $role: $image does not exist" \
      "(build it: containers/build.sh $role, or set BA3C_IMAGES or $image_var)"
    local extra role_extra role_args_var="BA3C_CONTAINER_ARGS_$upper"
    read -ra extra <<< "${BA3C_CONTAINER_ARGS:-}"
    read -ra role_extra <<< "${!role_args_var:-}"
    LAUNCH=("$runtime" exec --bind "$RUN_DIR" "${extra[@]}" "${role_extra[@]}" "$image" "${bin[@]}")
  fi
}

# -- one task of a component (runs on the compute node, under srun) ----------------------
# Runs the service with --index $SLURM_PROCID; restarts it after a crash, at most
# BA3C_MAX_RESTARTS times, with a growing pause; then says which component and task
# failed, with the tail of its log. Slurm signals every process of the step, the service
# included, so signals are only noted here, not passed on: a second SIGTERM would reach
# the service while it handles the first. A task that was told to stop is not restarted.
ba3c_task() {
  local component=$1 role=$2; shift 2
  local index=${SLURM_PROCID:-0} signalled=0 child="" code restarts=0
  trap 'signalled=1' TERM INT USR1 USR2
  [ -z "${BA3C_TASK_CONTAINER:-}" ] || ba3c_task_container_env
  while :; do
    "$@" --index "$index" &
    child=$!
    # A signal that came before the service existed did not reach it.
    [ "$signalled" = 0 ] || kill -TERM "$child" 2>/dev/null
    wait "$child"; code=$?
    while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done
    # Ask once more: a status reaped while the trap ran is only known now. Bash answers -1
    # (or 127) when it has no status to give; then the one above stands.
    local last; wait "$child" 2>/dev/null; last=$?
    [ "$last" = -1 ] || [ "$last" = 127 ] || code=$last
    if [ "$code" -eq 0 ] || { [ "$signalled" = 1 ] && [ "$code" -eq 143 ]; }; then
      exit 0
    fi
    [ "$signalled" = 0 ] && [ "$restarts" -lt "${BA3C_MAX_RESTARTS:-0}" ] || break
    restarts=$((restarts + 1))
    local pause=$((restarts * restarts * 2 < 30 ? restarts * restarts * 2 : 30))
    ba3c_task_report "$component" "$role" "$index" "$code" 5 "crashed" \
      "; restart $restarts of $BA3C_MAX_RESTARTS in ${pause}s"
    sleep "$pause" & wait $!
    [ "$signalled" = 0 ] || exit 0
  done
  ba3c_task_report "$component" "$role" "$index" "$code" "${BA3C_LOG_TAIL:-20}" "FAILED" \
    "$([ "$restarts" = 0 ] || echo " after $restarts restart(s)")"
  exit "$code"
}

ba3c_task_report() {  # COMPONENT ROLE INDEX CODE TAIL_LINES WHAT [MORE]
  local log="$BA3C_TASK_RUN_DIR/logs/$2-$3.log"
  {
    echo "ba3c hetjob: $6: component $1 ($2) task $3 on $(hostname) exited with code $4${7:-}"
    if [ -s "$log" ]; then
      echo "ba3c hetjob: last lines of $log:"
      tail -n "$5" "$log" | sed 's/^/    /'
    else
      echo "ba3c hetjob: $log is empty or missing (the output above may say why)"
    fi
  } >&2
}

# Apptainer/Singularity pass APPTAINERENV_X / SINGULARITYENV_X in as X even under
# --cleanenv and --containall: the task's Slurm variables (addresses, index, cores, GPUs)
# and ba3c knobs then reach the service whatever options the site adds.
ba3c_task_container_env() {
  export PYTHONNOUSERSITE=1   # a user's ~/.local must not shadow the image's packages
  local name
  for name in $(compgen -e); do
    case $name in
      SLURM_*|SLURMD_NODENAME|BA3C_*|PYTHONNOUSERSITE|CUDA_VISIBLE_DEVICES|TF_*)
        export "APPTAINERENV_$name=${!name}" "SINGULARITYENV_$name=${!name}";;
    esac
  done
}
export -f ba3c_task ba3c_task_report ba3c_task_container_env
export BA3C_TASK_RUN_DIR=$RUN_DIR
[ "$runtime" = none ] || export BA3C_TASK_CONTAINER=$runtime

# -- the run directory -------------------------------------------------------------------
# One job at a time per run directory: RUN_DIR/lock is held (flock) for the job's life by
# this shell and its children. A second job is refused before it changes anything; a
# requeued job (same id) waits for its previous incarnation's processes to let go.
lock_run_dir() {
  local lock="$RUN_DIR/lock" holder rc
  exec {lock_fd}>>"$lock" || die 2 "cannot open $lock"
  holder=$(head -n 1 "$lock" 2>/dev/null)
  local wait_s=0
  [[ $holder == "job $SLURM_JOB_ID "* ]] && wait_s=${BA3C_LOCK_WAIT:-120}
  flock -E 75 -w "$wait_s" "$lock_fd"; rc=$?
  if [ "$rc" = 75 ]; then
    die 2 "$RUN_DIR is in use by another job (${holder:-unknown}): one job per run" \
      "directory; wait for it to end (or scancel it), or set another BA3C_RUN_DIR"
  elif [ "$rc" != 0 ]; then
    say "WARNING: cannot lock $lock (a filesystem without flock, e.g. Lustre mounted" \
      "without -o flock?): nothing stops a second job on this run directory"
  fi
  echo "job $SLURM_JOB_ID on $(hostname) since $(date -u +%FT%TZ)" > "$lock"
}

say "job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}), run directory $RUN_DIR," \
  "container runtime $runtime"
say "shards $n_ps, learners $n_learners, pools $n_pools, components $n_components"
defaults=()
[ -n "${BA3C_ENV+x}" ] || defaults+=(--env ALE/Breakout-v5)
[ -n "${BA3C_USE_SYNC+x}" ] || defaults+=(--use_sync)
[ -n "${BA3C_REPLICAS_TO_AGGREGATE+x}" ] || defaults+=(--replicas_to_aggregate "$n_learners")
[ -n "${BA3C_RECORD_NODE+x}" ] || defaults+=(--record_node)
mkdir -p "$RUN_DIR" || die 2 "cannot create the run directory $RUN_DIR"
lock_run_dir
# init-run too gets the knobs under --cleanenv (tasks redo this with their own variables).
[ "$runtime" = none ] || ba3c_task_container_env
# `ba3c init-run` is ba3c's own (BA3C_BIN_INIT / BA3C_IMAGE_INIT, default BA3C_BIN and our
# paramserver image), never a replacement service's command: a replacement need not have it.
launcher init
"${LAUNCH[@]}" init-run --run-dir "$RUN_DIR" "${defaults[@]}" "${counts[@]}" "$@" \
  || die 2 "ba3c init-run failed for $RUN_DIR (see above)"
# Addresses of an earlier job on this run directory point at dead processes.
rm -f "$RUN_DIR"/addresses/* "$RUN_DIR"/targets/*

# -- the components ------------------------------------------------------------------------
declare -A step_pid=()
start_component() {  # start_component N [flags for the service]
  local component=$1 role=${ROLES[$1]} kill_on_bad_exit=1
  shift
  local cpus_var="SLURM_CPUS_PER_TASK_HET_GROUP_$component"
  # A pool or the evaluator that gave up ends only itself; the others go on.
  [ "$component" -ge 2 ] && kill_on_bad_exit=0
  launcher "$role"
  # --cpus-per-task again so that the tasks see SLURM_CPUS_PER_TASK (threads per process).
  srun --het-group="$component" --job-name="ba3c-$role" --kill-on-bad-exit=$kill_on_bad_exit \
    --cpus-per-task="${!cpus_var:-1}" \
    bash -c 'ba3c_task "$@"' ba3c_task "$component" "$role" \
    "${LAUNCH[@]}" "$role" --run-dir "$RUN_DIR" "${counts[@]}" "$@" &
  step_pid[$component]=$!
  say "component $component ($role): $(count "$component") task(s) on" \
    "$(v="SLURM_JOB_NODELIST_HET_GROUP_$component"; echo "${!v:-?}")"
}

# Sends SIGTERM to every task of a component's step (srun itself would SIGKILL them).
signal_component() {
  local component=$1 job_var="SLURM_JOB_ID_HET_GROUP_$1" step
  step=$(squeue --steps --noheader --format='%i %j' --jobs="${!job_var:-$SLURM_JOB_ID}" \
    | awk -v name="ba3c-${ROLES[$component]}" '$2 == name { print $1; exit }')
  [ -n "$step" ] && scancel --signal=TERM "$step" 2>/dev/null
}

wait_step() {  # wait_step COMPONENT SECONDS -> 0 if its srun ended in time
  local pid=${step_pid[$1]} deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}

stopping=0 requeue=0
stop_all() {  # stop_all REASON: components in STOP_ORDER, shards last (final checkpoint)
  [ "$stopping" = 1 ] && return
  stopping=1
  say "stopping ($1)"
  local c grace
  for c in "${STOP_ORDER[@]}"; do
    [ -n "${step_pid[$c]:-}" ] || continue
    kill -0 "${step_pid[$c]}" 2>/dev/null || continue
    grace=$BA3C_STOP_GRACE
    [ "$c" = 0 ] && grace=$BA3C_SHARD_STOP_GRACE
    signal_component "$c"
    wait_step "$c" "$grace" \
      || say "component $c (${ROLES[$c]}) still running ${grace}s after SIGTERM"
  done
}
preempted() {  # true once Slurm chose this job for preemption
  scontrol show job "$SLURM_JOB_ID" 2>/dev/null | grep -q 'PreemptTime=[0-9]'
}
on_usr1() {
  stop_all "USR1: the time limit is near, a preemption, or scancel --batch --signal=USR1"
  if preempted; then requeue=1; fi
}
on_usr2() { stop_all "USR2: stop and requeue"; requeue=1; }
# SIGTERM to this script means Slurm is ending the job (plain scancel, the time limit
# itself, a requeue or preemption by someone else): every task got SIGTERM too; this waits
# for the components in the stop order while Slurm's KillWait runs.
trap 'stop_all "SIGTERM: Slurm is ending the job"; trap - TERM; exit 143' TERM
trap on_usr1 USR1
trap on_usr2 USR2
[ -z "$pending" ] || "on_$pending"
budget=$(((n_components - 1) * BA3C_STOP_GRACE + BA3C_SHARD_STOP_GRACE))
[ "$budget" -le "$SIGNAL_LEAD" ] || say "WARNING: the stop graces add up to ${budget}s," \
  "more than the ${SIGNAL_LEAD}s between --signal and the time limit"

[ "$stopping" = 1 ] || start_component 0 "$@"
[ "$stopping" = 1 ] || say "waiting for $n_ps shard address(es)"
deadline=$((SECONDS + BA3C_START_TIMEOUT))
for ((k = 0; k < n_ps; k++)); do
  until [ -s "$RUN_DIR/addresses/paramserver-$k" ]; do
    [ "$stopping" = 0 ] && kill -0 "${step_pid[0]:-}" 2>/dev/null || break 2
    [ "$SECONDS" -lt "$deadline" ] || {
      stop_all "shards not up"
      die 1 "shard $k did not publish $RUN_DIR/addresses/paramserver-$k in" \
        "${BA3C_START_TIMEOUT}s; see $RUN_DIR/logs/paramserver-$k.log"
    }
    sleep 1 & wait $!
  done
done
if [ "$stopping" = 0 ] && kill -0 "${step_pid[0]}" 2>/dev/null; then   # else the watch below reports the shards
  start_component 1 "$@"
  start_component 2 "$@"
  if [ "$n_components" -ge 4 ]; then start_component 3 "$@"; fi
fi

bound=$(awk -v m="$BA3C_MINUTES" 'BEGIN { if (m !~ /^[0-9]*\.?[0-9]+$/) exit 1; print int(m * 60) }') \
  || die 2 "BA3C_MINUTES must be a number of minutes, got '$BA3C_MINUTES'"
[ "$bound" -gt 0 ] && say "the run ends after $BA3C_MINUTES minute(s)"
end=$((SECONDS + bound))

# -- watch: a failed component fails the job; the bound ends it ----------------------------
status=0
while [ "$stopping" = 0 ]; do
  for c in "${!step_pid[@]}"; do
    kill -0 "${step_pid[$c]}" 2>/dev/null && continue
    wait "${step_pid[$c]}"; code=$?
    unset "step_pid[$c]"
    if [ "$code" -ne 0 ] && [ "$c" = 3 ]; then
      say "FAILED: component 3 (evaluator) ended with exit code $code (named above);" \
        "training goes on without it"
      status=1
    elif [ "$code" -ne 0 ]; then
      say "FAILED: component $c (${ROLES[$c]}) ended with exit code $code" \
        "(the task that failed is named above); stopping the run"
      status=1
      stop_all "component $c failed"
    elif [ "$c" = 0 ]; then
      stop_all "the shards ended"
      # A preemption without the user signal sends SIGTERM to the tasks only: come back.
      if preempted; then requeue=1; fi
    else
      say "component $c (${ROLES[$c]}) ended"
    fi
    break
  done
  if [ "$stopping" = 0 ] && [ "$bound" -gt 0 ] && [ "$SECONDS" -ge "$end" ]; then
    stop_all "BA3C_MINUTES=$BA3C_MINUTES reached"
  fi
  [ "$stopping" = 1 ] || { sleep 2 & wait $!; }
done

# Components that stopped with an error after SIGTERM fail the job too.
for c in "${!step_pid[@]}"; do
  if kill -0 "${step_pid[$c]}" 2>/dev/null; then
    say "FAILED: component $c (${ROLES[$c]}) did not stop; Slurm kills it when the job ends"
    status=1
    continue
  fi
  wait "${step_pid[$c]}"; code=$?
  # 143: srun itself was told to stop (its tasks report their own failures above).
  if [ "$code" -ne 0 ] && [ "$code" -ne 143 ]; then
    say "FAILED: component $c (${ROLES[$c]}) ended with exit code $code while stopping"
    status=1
  fi
done
if [ "$requeue" = 1 ]; then
  say "requeueing job $SLURM_JOB_ID: it resumes from the final checkpoints"
  scontrol requeue "$SLURM_JOB_ID" || say "FAILED: scontrol requeue $SLURM_JOB_ID; submit" \
    "again with BA3C_RUN_DIR=$RUN_DIR to resume"
fi
say "done (exit $status); run directory $RUN_DIR, logs in $RUN_DIR/logs"
exit "$status"
