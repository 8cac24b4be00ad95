#!/bin/bash
# Bring up Ray on the allocated nodes (head on the first, one worker per other
# node via srun) and run a Tune sweep on it.
#
#   sbatch --nodes=4 slurm/ray_sweep.sh --gens all --sweep hparams,aug --samples 16 --scheduler asha
#
# Arguments go to jobs/tune.py; PYTHON, OUT (runs), EXPERIMENT (sweep) as in train_all.sh.
#SBATCH --job-name=pix2pix-ray
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=48:00:00
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
PY=${PYTHON:-python}
RAY=$(dirname "$(command -v "$PY")")/ray

nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${nodes[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')
port=6379
gpus=${SLURM_GPUS_ON_NODE:-0}

srun --nodes=1 --ntasks=1 -w "$head" "$RAY" start --head --node-ip-address="$head_ip" --port=$port \
    --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$gpus" --block &
sleep 15
for node in "${nodes[@]:1}"; do
    srun --nodes=1 --ntasks=1 -w "$node" "$RAY" start --address="$head_ip:$port" \
        --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$gpus" --block &
done
sleep 10

"$PY" jobs/tune.py --address "$head_ip:$port" --out "${OUT:-runs}" --experiment "${EXPERIMENT:-sweep}" \
    --gpus-per-trial "$([ "$gpus" -gt 0 ] && echo 1 || echo 0)" "$@"
