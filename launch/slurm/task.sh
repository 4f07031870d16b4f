#!/usr/bin/env bash
# One SLURM task per node (started by `srun` in train.sbatch): run `accelerate launch` for this node
# and forward SIGUSR1/SIGTERM to its training processes, which `accelerate launch` does not do for
# USR1 (its elastic agent only handles TERM/INT/HUP/QUIT, and USR1's default action kills it).
#
#   NNODES=2 NPROC=16 HEAD_NODE=host1 HEAD_PORT=29500 SLURM_NODEID=0 \
#   ACCELERATE=.venv/bin/accelerate LAUNCH_ARGS="--mixed_precision bf16" bash launch/slurm/task.sh launch/train.py RECIPE ...
set -u
# shellcheck disable=SC2086  # LAUNCH_ARGS is a list of flags
"${ACCELERATE:-accelerate}" launch --num_machines "$NNODES" --num_processes "$NPROC" \
    --machine_rank "${SLURM_NODEID:-0}" --main_process_ip "$HEAD_NODE" --main_process_port "$HEAD_PORT" \
    --rdzv_backend c10d ${LAUNCH_ARGS:-} "$@" &
launcher=$!
forward() { pkill "-$1" -P "$launcher" 2>/dev/null || true; }
trap 'forward USR1' USR1
trap 'forward TERM' TERM
code=0
while true; do
    wait "$launcher"; code=$?
    kill -0 "$launcher" 2>/dev/null || break  # finished, not just interrupted by a trapped signal
done
exit "$code"
