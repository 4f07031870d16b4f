"""W&B offline (WANDB_MODE=offline, no network): a resumed run's sessions and the command that uploads them.

W&B writes each start of a run into a folder of its own (`wandb/offline-run-<time>-<id>`) and cannot append to
an earlier one; `wandb sync` given every folder of the id uploads them as one run in start order. The test reads
the folders' transaction logs (W&B's protobuf records in LevelDB's log framing) to check that both sessions carry
the run's one id, that the resumed one records its rewind to the step it resumed from, and that the message
names exactly these folders.
"""
from __future__ import annotations

import glob
import struct
from pathlib import Path

from conftest import TINY_GAN, main_in_process
from distgen.loops.history import offline_sessions

BLOCK, HEADER = 32768, 7  # LevelDB log: 32 KiB blocks, chunks of crc32 (4), length (2), type (1)


def records(path: Path):
    """The protobuf Records of a .wandb transaction log (after its 7-byte W&B header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf = path.read_bytes(), 7, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        pos += HEADER
        if length == 0 and kind == 0:  # zero padding to the block end
            pos += left - HEADER
            continue
        buf, pos = buf + data[pos:pos + length], pos + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def session(folder: Path) -> dict:
    out = {"steps": []}
    for record in records(next(folder.glob("*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["id"] = record.run.run_id
            out["rewind"] = record.run.branch_point.value if record.run.HasField("branch_point") else None
        elif kind == "history":
            out["steps"].append(record.history.step.num)
    return out


def test_a_resumed_offline_run_is_one_wandb_run_in_two_sessions_uploaded_by_one_command(digits, tmp_path):
    run_dir = tmp_path / "run"
    common = ["recipes/dcgan_digits_smoke.yaml", *TINY_GAN, "log.every=2", "log.sample_every=100",
              f"data.root={digits}", f"run.dir={run_dir}", "run.checkpoint_every=2", "log.wandb.enabled=true"]
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": None, "WANDB_SILENT": "true", "WANDB_DIR": None}
    said = []
    for steps in (4, 8):
        result = main_in_process("launch/train.py", [*common, f"train.steps={steps}", "--resume", "auto"], env)
        assert result.returncode == 0, result.stderr[-3000:]
        said.append(next(line for line in (result.stdout + result.stderr).splitlines() if line.startswith("W&B:")))
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and [session(f)["id"] for f in folders] == [run_id, run_id]
    first, second = map(session, folders)
    assert first["rewind"] is None and first["steps"] == [2, 4]
    assert second["rewind"] == 4 and second["steps"] == [6, 8]  # W&B rewinds to 4, then appends 6 and 8
    pattern = offline_sessions(run_dir, run_id)
    assert all(f"`wandb sync {pattern}`" in line for line in said)
    assert "all 2 sessions" in said[1] and "all " not in said[0]
    assert sorted(Path(p) for p in glob.glob(pattern)) == folders


def test_the_sync_pattern_holds_a_session_started_within_the_same_second(tmp_path):
    """W&B names a session's folder offline-run-<time to the second>-<id>, and appends -1, -2... when that
    folder exists: a resumed run that starts within the same second as the last session. The pattern the
    message gives `wandb sync` must hold those too, or one session is never uploaded."""
    run_id = "0123456789ab"
    made = [tmp_path / "wandb" / f"offline-run-20261206_231500-{run_id}{suffix}" for suffix in ("", "-1", "-2")]
    for folder in made + [tmp_path / "wandb" / "offline-run-20261206_231500-ffffffffffff"]:  # another run's
        folder.mkdir(parents=True)
    assert sorted(Path(p) for p in glob.glob(offline_sessions(tmp_path, run_id))) == made
