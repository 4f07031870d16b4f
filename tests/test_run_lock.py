"""The run-dir lock where the filesystem has no flock (Lustre without -o flock: ENOSYS; NFS: ENOLCK):
distgen/loops/run_dir.py falls back to a lock file with pid, host and a heartbeat, refuses a second
start while the holder's heartbeat is fresh, and takes a dead run's lock over, saying whose."""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import time

import pytest

from distgen.errors import ConfigError
from distgen.loops import run_dir as run_dir_mod
from distgen.loops.run_dir import RunLock


@pytest.fixture(params=[errno.ENOSYS, errno.ENOLCK])
def no_flock(request, monkeypatch):
    def flock(fd, op):
        raise OSError(request.param, os.strerror(request.param))

    monkeypatch.setattr(run_dir_mod.fcntl, "flock", flock)


def test_without_flock_a_second_start_is_refused_while_the_first_holds_it(no_flock, tmp_path, capsys):
    first = RunLock(tmp_path)
    assert "no flock" in capsys.readouterr().err
    held = json.loads((tmp_path / ".lock.heartbeat").read_text())
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    with pytest.raises(ConfigError, match=f"in use by a live run: pid {os.getpid()} on host"):
        RunLock(tmp_path)
    first.release()
    assert not (tmp_path / ".lock.heartbeat").exists()
    RunLock(tmp_path).release()  # free again


def test_the_heartbeat_is_refreshed_while_the_run_lives(no_flock, tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir_mod, "HEARTBEAT_S", 0.05)
    lock = RunLock(tmp_path)
    try:
        first = json.loads((tmp_path / ".lock.heartbeat").read_text())["heartbeat"]
        deadline = time.monotonic() + 10
        while json.loads((tmp_path / ".lock.heartbeat").read_text())["heartbeat"] == first:
            assert time.monotonic() < deadline, "the heartbeat never moved"
            time.sleep(0.05)
    finally:
        lock.release()


def _write(path, **holder):
    path.write_text(json.dumps({"started": "2026-01-01T00:00:00+00:00", "command": [], **holder}))


def test_a_stale_lock_from_another_host_is_taken_over_with_a_message(no_flock, tmp_path, capsys):
    path = tmp_path / ".lock.heartbeat"
    _write(path, pid=4242, host="node-17", heartbeat=time.time())  # alive as far as anyone can tell
    with pytest.raises(ConfigError, match="pid 4242 on host node-17"):
        RunLock(tmp_path)
    _write(path, pid=4242, host="node-17", heartbeat=time.time() - 3600)  # the node died an hour ago
    lock = RunLock(tmp_path)
    err = capsys.readouterr().err
    assert "taking over the lock of a dead run" in err and "node-17" in err and "heartbeat is 3600 s old" in err
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()


def test_a_lock_whose_pid_is_gone_on_this_host_is_taken_over_at_once(no_flock, tmp_path, capsys):
    gone = subprocess.Popen(["true"])
    gone.wait()
    _write(tmp_path / ".lock.heartbeat", pid=gone.pid, host=socket.gethostname(), heartbeat=time.time())
    RunLock(tmp_path).release()
    assert f"pid {gone.pid} no longer runs on this host" in capsys.readouterr().err


def test_other_lock_errors_are_not_hidden(tmp_path, monkeypatch):
    def flock(fd, op):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(run_dir_mod.fcntl, "flock", flock)
    with pytest.raises(OSError, match="I/O error"):
        RunLock(tmp_path)
