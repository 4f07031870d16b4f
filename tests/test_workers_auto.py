"""data.num_workers=auto (-1, the default): workers from the CPUs a process has (distgen/data/workers.py),
the resolved count in the checkpoint topology (and so run.json)."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

import distgen.data.workers as workers_module
from distgen import recipes
from distgen.data.workers import resolve_workers
from distgen.errors import ConfigError
from distgen.loops.checkpointer import topology


@pytest.fixture(autouse=True)
def no_cap(monkeypatch):
    """The suite caps auto at 0 (tests/conftest.py); these tests are about the rule itself."""
    monkeypatch.delenv("DISTGEN_MAX_WORKERS", raising=False)


def test_the_cap_of_the_environment_bounds_auto(cpus, monkeypatch):
    from distgen.data.workers import AUTO, resolve_workers

    cpus(8)
    assert resolve_workers(AUTO, {}) == 7 and resolve_workers(AUTO, {"DISTGEN_MAX_WORKERS": "2"}) == 2
    assert resolve_workers(AUTO, {"DISTGEN_MAX_WORKERS": "0"}) == 0 and resolve_workers(3, {"DISTGEN_MAX_WORKERS": "0"}) == 3


@pytest.fixture
def cpus(monkeypatch):
    """Pretend this process's affinity mask holds N CPUs."""
    def set_cpus(n):
        monkeypatch.setattr(workers_module.os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
    return set_cpus


@pytest.mark.parametrize("affinity, env, expected", [
    (2, {}, 1),                                                      # this laptop: one worker, one trainer
    (1, {}, 0),                                                      # one CPU: no workers, no negative count
    (96, {"LOCAL_WORLD_SIZE": "8"}, 8),                              # 12 each, capped at MAX_AUTO
    (96, {"LOCAL_WORLD_SIZE": "8", "SLURM_CPUS_PER_TASK": "32"}, 3),  # launch/submit.py: 4 CPUs per GPU
    (16, {"LOCAL_WORLD_SIZE": "4"}, 3),                              # 4 CPU processes on 16 cores
    (16, {"LOCAL_WORLD_SIZE": "32"}, 0),                             # more processes than CPUs
    (8, {"SLURM_CPUS_PER_TASK": "", "LOCAL_WORLD_SIZE": "x"}, 7),    # unset or garbled: ignored
])
def test_auto_workers_follow_the_cpus_of_the_process(cpus, affinity, env, expected):
    cpus(affinity)
    assert resolve_workers(-1, env) == expected
    assert resolve_workers(5, env) == 5  # a count given is kept


def test_auto_is_the_default_and_is_recorded_resolved(cpus, monkeypatch):
    cpus(12)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    cfg = recipes.load("recipes/quickstart.yaml", [])
    assert cfg.data.num_workers == -1
    assert recipes.load("recipes/quickstart.yaml", ["data.num_workers=auto"]).data.num_workers == -1
    acc = SimpleNamespace(num_processes=4, mixed_precision="no")
    assert topology(acc, cfg)["num_workers"] == 5  # 12 // 2 - 1: what run.json and meta.json say
    assert topology(acc, recipes.load("recipes/quickstart.yaml", ["data.num_workers=2"]))["num_workers"] == 2


def test_a_bad_worker_count_names_the_key():
    with pytest.raises(ConfigError, match=r"'data.num_workers' >= 0 \(or -1: auto"):
        recipes.load("recipes/quickstart.yaml", ["data.num_workers=-3"])
    with pytest.raises(ConfigError, match=r"'data.num_workers' must be an integer, got 'many'"):
        recipes.load("recipes/quickstart.yaml", ["data.num_workers=many"])


def test_this_machine_resolves_without_faking(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert resolve_workers(-1) == min(8, len(os.sched_getaffinity(0)) - 1)
