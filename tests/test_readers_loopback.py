"""Many readers on few shards, proven on loopback: 2 "nodes" x 4 CPU processes x 2 DataLoader workers =
16 readers on the 6-shard digits set (split mode deals samples, distgen/data/deal.py), a tiny GAN trained
a few steps, and every rank's parameters identical at the end (ranks.json)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

from conftest import BIN, ROOT, TINY_GAN, free_port


def test_two_nodes_of_four_processes_with_two_workers_on_six_shards(digits, tmp_path):
    data = digits  # the converter's digits: 6 train shards (256 x 5 + 158 samples)
    assert len(json.loads((data / "index.json").read_text())["splits"]["train"]["shards"]) == 6
    run_dir, port = tmp_path / "run", free_port()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1"}

    def node(rank):
        return subprocess.Popen(
            [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_machines", "2", "--machine_rank", str(rank),
             "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--num_processes", "8",
             "--mixed_precision", "no", "--dynamo_backend", "no", "launch/train.py", "recipes/dcgan_digits_smoke.yaml",
             *TINY_GAN, f"data.root={data}", f"run.dir={run_dir}", "data.num_workers=2", "train.steps=3",
             "train.threads=1", "train.batch_size=8", "eval.every=0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    nodes = [node(0)]  # node 0 hosts the rendezvous store; on one host, let it bind the port first
    deadline = time.time() + 180
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert nodes[0].poll() is None and time.time() < deadline, nodes[0].communicate()[1][-3000:]
        time.sleep(0.2)
    nodes.append(node(1))
    for proc in nodes:
        _, err = proc.communicate(timeout=500)
        assert proc.returncode == 0, err[-3000:]
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 8 and ranks["in_sync"]
    facts = json.loads((run_dir / "run.json").read_text())
    assert (facts["world_size"], facts["machines"], facts["num_workers"]) == (8, 2, 2)  # 16 readers, 6 shards
