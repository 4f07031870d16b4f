#!/usr/bin/env bash
# One SLURM task per node of a multi-node job (started by `srun` in train.sbatch): this node's share of
# the training, under launch/launcher.py (which passes USR1/TERM on to the training processes, waits
# for them and exits 0 after a clean stop), with a c10d rendezvous on the first node.
#
#   NNODES=2 NPROC=16 HEAD_NODE=host1 HEAD_PORT=29500 SLURM_NODEID=0 PYTHON=.venv/bin/python \
#   ACCELERATE=.venv/bin/accelerate LAUNCH_ARGS="--multi_gpu --mixed_precision bf16" \
#   bash launch/slurm/task.sh launch/train.py RECIPE ...
set -u
# shellcheck disable=SC2086  # LAUNCH_ARGS is a list of flags
exec "${PYTHON:-python}" launch/launcher.py --stop-code 0 --shutdown-timeout "${SHUTDOWN_TIMEOUT:-600}" \
    --accelerate "${ACCELERATE:-accelerate}" --num_machines "$NNODES" --num_processes "$NPROC" \
    --machine_rank "${SLURM_NODEID:-0}" --main_process_ip "$HEAD_NODE" --main_process_port "$HEAD_PORT" \
    --rdzv_backend c10d ${LAUNCH_ARGS:-} "$@"
