"""Two real processes reading one shard set, as DDP ranks would: what each rank saw, for tests/test_stream.py.

    torchrun --standalone --nproc_per_node 2 tests/stream_ranks.py SHARD_DIR OUT.json

Each rank takes batches in both modes until its stream reaches epoch 3, with one all_reduce per
batch (as DDP's gradient sync would: a rank with fewer batches would leave the other waiting),
then walks the test split once. Rank 0 writes everything, per rank, to OUT.json.
"""
from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from distgen.config import DataConfig
from distgen.data import eval_batches, load_info, split_urls, train_loader

EPOCHS, BATCH = 3, 6


def main(root: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = {"rank": rank}
    for mode in ("split", "resampled"):
        cfg = DataConfig(root=root, mode=mode, num_workers=2, shuffle_buffer=16)
        info = load_info(cfg)
        batches = iter(train_loader(split_urls(info, "train", "data.train_split"), BATCH, info, cfg, seed=1,
                                    rank=rank, world_size=world))
        labels, epochs, skipped = [], [], 0
        while True:
            batch = next(batches)
            if int(batch["epoch"].min()) >= EPOCHS:
                break
            dist.all_reduce(torch.ones(1))
            labels += batch["label"].tolist()
            epochs += batch["epoch"].tolist()
            skipped += int(batch["skipped"])
        mine[mode] = {"labels": labels, "epochs": epochs, "skipped": skipped}
    info = load_info(DataConfig(root=root))
    mine["eval"] = [label for batch in eval_batches(split_urls(info, "test", "data.eval_split"), 4, info,
                                                    rank=rank, world_size=world) for label in batch["label"].tolist()]
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(everyone, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
