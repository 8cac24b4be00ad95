#!/bin/bash
# Train the three generators as a SLURM job array, one task per generator (and training seed).
#
#   sbatch slurm/train_all.sh                                   # paper protocol, synthetic data
#   sbatch --export=ALL,DATA=/data/cityscapes,OUT=$PWD/runs slurm/train_all.sh
#   sbatch --export=ALL,PRESET=small --gres=gpu:0 slurm/train_all.sh   # CPU demo
#   sbatch --array=0-8 --export=ALL,SEEDS=3 slurm/train_all.sh  # 3 generators x train.seed 0..2
#   SEEDS=3 bash slurm/train_all.sh --partition=gpu            # submits itself with the array it needs
#
# Overridable (environment): DATA (synthetic), OUT (runs), PRESET (paper),
# EXPERIMENT (slurm), SEEDS (1), PYTHON (python), EXTRA_ARGS (dotted overrides,
# e.g. "--optim.lr_g 1e-4"). Task i trains generator i / SEEDS with train.seed
# i % SEEDS into OUT/EXPERIMENT/<generator> (<generator>-seed<k> with SEEDS > 1).
# The array is derived, never written down: run with bash, the script submits itself with the array
# the registry's generators x SEEDS need (any arguments go to sbatch); given to sbatch without --array,
# it resubmits itself the same way with the job's own resources, and ends. So a generator added as one
# file is trained with no line here to edit. An explicit --array may name any subset (--array=2 redoes
# one task); a task beyond the registry's fails in one line naming the tasks there are.
# SLURM sends USR1 300 s before the time limit: the trainer checkpoints and
# exits 75, and this script requeues the task; a requeued (or preempted and
# requeued) task reruns the same command, which resumes at the exact step.
#SBATCH --job-name=pix2pix
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%x-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
set -uo pipefail

# The launch plan (cluster/plan.py) maps tasks to runs, as Tune and submitit do: the registry's generators
# in order x SEEDS, the run names.
SEEDS=${SEEDS:-1}
if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then  # not an array task: submit this script as the array it needs
    if [ -n "${SLURM_JOB_ID:-}" ]; then  # a job sbatch started without --array: its resources, as options
        OPTIONS=$("${PYTHON:-python}" -m cluster.plan job-options "$SLURM_JOB_ID") || exit 2
        if [ -n "$OPTIONS" ]; then
            mapfile -t FROM_JOB <<< "$OPTIONS"
            set -- "${FROM_JOB[@]}" "$@"
        fi
        echo "[$(date -Is)] submitted without --array: submitting the array the registry needs"
    fi
    TASKS=$("${PYTHON:-python}" -m cluster.plan tasks --seeds "$SEEDS") || exit 2
    exec sbatch --array=0-$((TASKS - 1)) "$@" "$0"
fi
TASK=${SLURM_ARRAY_TASK_ID}
read -r GEN SEED NAME < <("${PYTHON:-python}" -m cluster.plan task "$TASK" --seeds "$SEEDS") || true
[ -n "${NAME:-}" ] || exit 2  # the plan said why, in one line on stderr
NAME_ARGS=()
if [ "$SEEDS" -gt 1 ]; then
    NAME_ARGS=(--run-name "$NAME" --train.seed "$SEED")
fi
cd "${SLURM_SUBMIT_DIR:-.}"
echo "[$(date -Is)] task ${TASK} (${GEN}, seed ${SEED}) on $(hostname), restart ${SLURM_RESTART_COUNT:-0}"

# shellcheck disable=SC2086  # EXTRA_ARGS is a list of flags
"${PYTHON:-python}" jobs/train.py --gens "$GEN" --data "${DATA:-synthetic}" --out "${OUT:-runs}" \
    --preset "${PRESET:-paper}" --experiment "${EXPERIMENT:-slurm}" "${NAME_ARGS[@]}" ${EXTRA_ARGS:-} &
child=$!
trap 'echo "[$(date -Is)] signal: asking the trainer to checkpoint"; kill -USR1 "$child" 2>/dev/null' USR1 TERM
# `wait` returns early when a trapped signal arrives: wait until the trainer has really exited.
while true; do
    wait "$child"; code=$?
    kill -0 "$child" 2>/dev/null || break
done
if [ "$code" -eq 75 ]; then
    echo "[$(date -Is)] preempted at a checkpoint; requeueing"
    scontrol requeue "${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_${SLURM_ARRAY_TASK_ID:-0}" 2>/dev/null \
        || scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
exit "$code"
