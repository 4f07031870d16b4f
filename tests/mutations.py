"""The mutation check: break one line of the core at a time and rerun the tests that must notice.

    make mutants                                   # = python tests/mutations.py
    python tests/mutations.py --only ema stepper   # the mutations whose name contains one of these
    python tests/mutations.py --list               # check every original is still in the code, run nothing

Each mutation is (name, file, the exact original text, its replacement, the tests that must catch it).
The runner copies the repository's files (git ls-files: tracked and untracked-not-ignored) into a
temporary folder once, applies each mutation there in turn, runs its tests with `pytest -x`, and puts
the original file back; the checkout itself is never written, so Ctrl-C leaves nothing broken. It prints
a table: KILLED (a named test failed: the catching test is shown), SURVIVED (the tests passed on broken
code) or ERROR (pytest could not run them, e.g. a test id that no longer exists). The exit status is 1
if any mutation survived or errored, or if any original text is not found exactly once in its file (a
mutation that no longer applies must be updated, not silently skipped). First every mutation's tests
run once on the unbroken code (--no-baseline skips it): a failing test there would "kill" every mutant.
Slow (every mutant reruns real training runs): not part of `make test`.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]  # pytest arguments: node ids, or a file with "-k", "expression"


LOSS = "        self.backward(functools.reduce(operator.add, terms.values()), phase)\n"
RESUME = ("tests/test_train.py::test_resume_is_exact",)
RAM_RESUME = ("tests/test_cache.py::test_training_with_ram_resumes_exactly",)
# the stepper's own no-read test (seconds) before the whole-loop one (two training runs)
STEP_READS = ("tests/test_stepper.py::test_a_non_finite_step_changes_nothing_and_is_counted_on_the_device",
              "tests/test_stepper.py::test_a_training_step_reads_nothing_back_from_the_device")

MUTATIONS = [
    # -- the stepper -------------------------------------------------------------------------------
    Mutation("stepper: host-side skip steps anyway", "distgen/loops/stepper.py",
             "    elif not bool(bad):  # deliberate host sync: this optimizer has no device-side skip\n",
             "    else:\n",
             ("tests/test_cluster.py", "-k", "non_finite_step_is_skipped and (rmsprop or unfused)")),
    Mutation("stepper: fused optimizers never skip", "distgen/loops/stepper.py",
             "        inner.found_inf = bad\n", "        inner.found_inf = bad * 0\n",
             ("tests/test_stepper.py::test_a_non_finite_step_changes_nothing_and_is_counted_on_the_device",)),
    Mutation("stepper: skipped steps not counted", "distgen/loops/stepper.py",
             '                    stats.report("nonfinite_skipped", self._view(j))\n',
             '                    stats.report("nonfinite_skipped", self._view(j) * 0)\n',
             ("tests/test_cluster.py", "-k", "non_finite_step_is_skipped and fused and not unfused")),
    Mutation("stepper: steps on every micro-batch", "distgen/loops/stepper.py",
             "        if self.accumulating and not self.acc.sync_gradients:",
             "        if False:",
             ("tests/test_stepper.py::test_accumulated_micro_batches_step_like_one_big_batch",
              "tests/test_stepper.py::test_single_objective_grad_accum_steps_once_per_k_micro_batches")),
    Mutation("stepper: accumulate entered with k = 1", "distgen/loops/stepper.py",
             "        self.accumulating = cfg.train.grad_accum > 1 or self.deepspeed\n",
             "        self.accumulating = True\n",
             ("tests/test_stepper.py::test_one_micro_batch_per_step_goes_around_accelerates_per_call_wrappers",)),
    Mutation("stepper: optimizers stepped through Accelerate", "distgen/loops/stepper.py",
             "        direct = acc.scaler is None and not self.deepspeed",
             "        direct = False and not self.deepspeed",
             ("tests/test_stepper.py::test_one_micro_batch_per_step_goes_around_accelerates_per_call_wrappers",)),
    Mutation("stats: a repeated name twice in one foreach add", "distgen/stats.py",
             "        seen[key] += 1\n", "        seen[key] += 0\n",
             ("tests/test_stepper.py::test_a_name_reported_several_times_never_enters_one_foreach_add_twice",)),
    Mutation("capture: replays not counted", "distgen/loops/stepper.py",
             "            self.capture_record += stats.flush()\n", "            stats.flush()\n",
             ("tests/test_capture.py::test_every_replay_is_counted_in_the_statistics",)),
    Mutation("accelerator: train.grad_accum ignored", "distgen/loops/common.py",
             "gradient_accumulation_steps=cfg.train.grad_accum,", "gradient_accumulation_steps=1,",
             ("tests/test_gan_mechanics.py::test_gradient_accumulation_takes_k_micro_batches_per_step",
              "tests/test_sampling.py::test_loop_ema_counts_the_global_batch_and_copies_running_statistics")),
    Mutation("stepper: .cpu().numpy() every step", "distgen/loops/stepper.py",
             LOSS, LOSS + "        next(iter(terms.values())).detach().cpu().numpy()\n",
             ("tests/test_stepper.py", "-k", "reads_nothing and dcgan")),
    Mutation("stepper: torch.equal every step", "distgen/loops/stepper.py",
             LOSS, LOSS + "        torch.equal(*[next(iter(terms.values()))] * 2)\n", STEP_READS),
    Mutation("stepper: nonzero every step", "distgen/loops/stepper.py",
             LOSS, LOSS + "        next(iter(terms.values())).reshape(1).nonzero()\n", STEP_READS),
    Mutation("loop: G's optimizer never steps", "distgen/loops/adversarial.py",
             "Group(p.spec.nets, [opts[n] for n in p.spec.nets])",
             'Group(p.spec.nets, [opts[n] for n in p.spec.nets if n != "G"])',
             ("tests/test_families.py", "-k", "smoke_recipes_train_on_two_processes and dcgan")),
    # -- the lean step (statistics on the device, the guard's vector record, the flags) ---------------------
    Mutation("stats: flush adds nothing", "distgen/stats.py",
             "            torch._foreach_add_(slots, values)\n", "            pass\n",
             ("tests/test_stepper.py::test_a_non_finite_step_changes_nothing_and_is_counted_on_the_device",)),
    Mutation("guard: a round records no row", "distgen/loops/guard.py",
             "            torch.addcmul(bad, self._row_vec, bad, out=self._row_vec)\n", "            pass\n",
             ("tests/test_capture.py::test_the_captured_step_equals_the_eager_step",)),
    Mutation("stepper: flags never cleared", "distgen/loops/stepper.py",
             "            self.found.zero_()\n", "            pass\n",
             ("tests/test_capture.py::test_the_captured_step_equals_the_eager_step",)),
    Mutation("buffers: non-finite statistics kept", "distgen/loops/guard.py",
             "            b.copy_(torch.where(torch.isfinite(b), b, s))\n", "            pass\n",
             ("tests/test_nonfinite_buffers.py",)),
    Mutation("stepper: Accelerate's autocast left on every forward", "distgen/loops/nets.py",
             "        acc.unwrap_model(net, keep_fp32_wrapper=False)", "        acc.unwrap_model(net, keep_fp32_wrapper=True)",
             ("tests/test_lean_step.py", "-k", "bf16")),
    # -- EMA -----------------------------------------------------------------------------------------
    Mutation("ema: load_state_dict loads no weights", "distgen/ema.py",
             '        self.module.load_state_dict({k[len("module."):]: v for k, v in state.items() '
             'if k.startswith("module.")})\n', "        pass\n", RESUME),
    Mutation("ema: image count not restored", "distgen/ema.py",
             '            self.nimg = int(state["nimg"])\n', "            self.nimg = 0\n", RESUME),
    Mutation("ema: buffers not copied", "distgen/ema.py",
             "            torch._foreach_copy_(buffers, list(G.buffers()))\n", "            pass\n",
             ("tests/test_sampling.py::test_loop_ema_counts_the_global_batch_and_copies_running_statistics",)),
    Mutation("ema: counts steps, not images", "distgen/ema.py",
             "        self.nimg += self.images_per_step\n", "        self.nimg += 1\n",
             ("tests/test_sampling.py::test_loop_ema_counts_the_global_batch_and_copies_running_statistics",)),
    # -- checkpointer ----------------------------------------------------------------------------------
    Mutation("checkpointer: nets by name not loaded", "distgen/loops/checkpointer.py",
             "            self.acc.unwrap_model(model, keep_torch_compile=False).load_state_dict(load_file(str(file)))\n",
             "            pass\n", RAM_RESUME),
    Mutation("checkpointer: old model_<i> files not loaded", "distgen/loops/checkpointer.py",
             "            return  # an older checkpoint (model_<i> files): Accelerate loads it as it wrote it\n",
             "            models.clear()\n            return\n",
             ("tests/test_run_dir.py::"
              "test_a_checkpoint_with_accelerates_numbered_model_files_still_resumes_and_loads",)),
    Mutation("checkpointer: per-rank state not loaded", "distgen/loops/checkpointer.py",
             '                obj.load_state_dict(torch.load(mine, map_location="cpu", weights_only=True))\n',
             "                pass\n",
             ("tests/test_image2image.py::test_cyclegan_resume_is_exact_and_translations_are_measured",)),
    Mutation("checkpointer: abandoned branch not moved aside", "distgen/loops/checkpointer.py",
             '                shutil.move(str(path), aside / "checkpoints" / path.name)\n', "                pass\n",
             ("tests/test_run_dir.py::test_rollback_moves_the_abandoned_branch_aside_and_auto_continues_the_new_one",)),
    Mutation("run: resume loads nothing and restarts at step 0", "distgen/loops/common.py",
             "        self.checkpoints.load(self.resume_from)\n", "        pass\n", RAM_RESUME),
    # -- run dir and history -------------------------------------------------------------------------
    Mutation("run dir: --resume auto silently starts from step 0", "distgen/loops/run_dir.py",
             "        return run_dir, latest_checkpoint(run_dir)\n", "        return run_dir, None\n", RAM_RESUME),
    Mutation("run dir: --resume auto picks the oldest run", "distgen/loops/run_dir.py",
             "    return max(runs, key=saved_at) if runs else None\n",
             "    return min(runs, key=saved_at) if runs else None\n",
             ("tests/test_run_dir.py::test_resume_auto_picks_the_newest_run_not_the_lexically_last",)),
    Mutation("history: rewind keeps later rows", "distgen/loops/history.py",
             '        keep = [r for r in rows if r.get("step", 0) <= step]\n', "        keep = rows\n",
             ("tests/test_run_dir.py::test_history_rewind_drops_later_eval_files_and_recomputes_the_summary",)),
    # -- data stream position --------------------------------------------------------------------------
    Mutation("stream: worker roles ignore the resume point", "distgen/data/stream.py",
             "        role = ((worker.id if worker else 0) + self.start_batch) % n_workers\n",
             "        role = (worker.id if worker else 0) % n_workers\n",
             ("tests/test_stream.py::test_resume_continues_the_stream_exactly",)),
    Mutation("loop: stream reopened at batch 0 on resume", "distgen/loops/adversarial.py",
             "    streams.open(acc, state.batches)\n", "    streams.open(acc, 0)\n", RAM_RESUME),
    # -- sampling ------------------------------------------------------------------------------------
    Mutation("sampling: chunks follow the slice", "distgen/generation.py",
             "    for lo in range(start // CHUNK * CHUNK, stop, CHUNK):\n",
             "    for lo in range(start, stop, CHUNK):\n",
             ("tests/test_sampling.py::test_images_come_from_fixed_chunks_whatever_the_slice",)),
    # -- speed switches and precision --------------------------------------------------------------------
    Mutation("loop: train.channels_last ignored", "distgen/loops/nets.py",
             "    if cfg.train.channels_last:\n        nets =", "    if False:\n        nets =",
             ("tests/test_gan_mechanics.py::test_speed_switches_train[dcgan_digits_smoke]",)),
    Mutation("loop: train.compile ignored", "distgen/loops/nets.py",
             "    if cfg.train.compile:\n        nets = {n: net if n in eager", "    if False:\n        nets = {n: net if n in eager",
             ("tests/test_gan_mechanics.py::test_speed_switches_train[dcgan_digits_smoke]",)),
    Mutation("accelerator: --mixed_precision ignored", "distgen/loops/common.py",
             "    acc = Accelerator(kwargs_handlers=[ddp, pg],",
             '    acc = Accelerator(mixed_precision="no", kwargs_handlers=[ddp, pg],',
             ("tests/test_gan_mechanics.py::test_mixed_precision_runs_through_accelerate_launch[bf16-5]",)),
]


# Run order (cheap tests first, so a partial run has already covered most): by the first test's kind.
COST = {"tests/test_run_dir.py::test_resume_auto": 0, "tests/test_run_dir.py::test_history": 0,
        "tests/test_sampling.py::test_images": 0, "tests/test_stepper.py::test_a_non_finite": 0,
        "tests/test_stream.py": 1, "tests/test_gan_mechanics.py::test_gradient": 2, "tests/test_sampling.py": 2,
        "tests/test_cache.py": 3, "tests/test_gan_mechanics.py::test_speed": 3, "tests/test_stepper.py": 4,
        "tests/test_gan_mechanics.py::test_mixed": 4, "tests/test_cluster.py": 4, "tests/test_train.py": 5,
        "tests/test_run_dir.py": 5, "tests/test_families.py": 6, "tests/test_image2image.py": 7}


def cost(m: Mutation) -> int:
    return min((v for k, v in COST.items() if m.tests[0].startswith(k)), default=5)


def missing(mutations) -> list[str]:
    """'name: why' for every mutation whose original is not exactly once in its file."""
    out = []
    for m in mutations:
        path = ROOT / m.file
        count = path.read_text().count(m.original) if path.is_file() else -1
        if count != 1:
            out.append(f"{m.name}: {m.file} " + ("does not exist" if count < 0 else
                                                 f"holds the original text {count} times (want 1)"))
    return out


def copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file() and not src.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def pytest(copy: Path, tests, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", *tests],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)


def baseline(mutations, copy: Path, timeout: int) -> list[str]:
    """Every mutation's tests on the unbroken code: a test that fails there would 'kill' any mutant."""
    failing = []
    for tests in dict.fromkeys(m.tests for m in mutations):
        result = pytest(copy, tests, timeout)
        if result.returncode != 0:
            failing.append(f"{' '.join(tests)}: pytest exit {result.returncode}\n{result.stdout[-1500:]}")
    return failing


def run_one(m: Mutation, copy: Path, timeout: int) -> tuple[str, str, float]:
    """(KILLED|SURVIVED|ERROR, the catching test or what went wrong, seconds)."""
    target = copy / m.file
    original = target.read_text()
    target.write_text(original.replace(m.original, m.replacement, 1))
    start = time.perf_counter()
    try:
        result = pytest(copy, m.tests, timeout)
        out = result.stdout + result.stderr
        if result.returncode == 1:
            failed = re.findall(r"^FAILED (\S+)", out, flags=re.M)
            why = re.findall(r"^E\s+(.+)$", out, flags=re.M)[:1]  # the first error line: killed for the right reason?
            detail = (failed[0] if failed else "(a test failed)") + (f"  [{why[0][:90]}]" if why else "")
            return "KILLED", detail, time.perf_counter() - start
        if result.returncode == 0:
            return "SURVIVED", "every test passed", time.perf_counter() - start
        last = [line for line in out.strip().splitlines() if line.strip()][-1:] or [""]
        return "ERROR", f"pytest exit {result.returncode}: {last[0][:100]}", time.perf_counter() - start
    except subprocess.TimeoutExpired:
        return "ERROR", f"timed out after {timeout} s", time.perf_counter() - start
    finally:
        target.write_text(original)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=[], help="run the mutations whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="check the originals and list the mutations; run none")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per mutant's tests")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the tests on the unbroken code first (when you just did)")
    args = parser.parse_args(argv)
    chosen = sorted((m for m in MUTATIONS if not args.only or any(s in m.name for s in args.only)), key=cost)
    gone = missing(chosen)
    for line in gone:
        print(f"NOT FOUND  {line}", file=sys.stderr)
    if args.list:
        for m in chosen:
            print(f"{m.name:52s} {m.file:32s} {' '.join(m.tests)}")
        return 1 if gone else 0
    if gone:
        print("update these mutations to the code as it is now (none was run)", file=sys.stderr)
        return 1
    # SIGTERM as Ctrl-C: the temporary copy is removed either way (the checkout was never written)
    signal.signal(signal.SIGTERM, _interrupt)
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distgen-mutants-") as tmp:
        copy = Path(tmp)
        copy_repo(copy)
        if not args.no_baseline:
            failing = baseline(chosen, copy, args.timeout)
            print(f"baseline: the tests of {len(chosen)} mutations on the unbroken code in "
                  f"{time.perf_counter() - start:.0f} s: {'all pass' if not failing else 'FAILING'}", flush=True)
            if failing:
                print("\n".join(failing), file=sys.stderr)
                print("fix these tests first: a test that fails on unbroken code proves nothing", file=sys.stderr)
                return 1
        for i, m in enumerate(chosen, 1):
            verdict, detail, seconds = run_one(m, copy, args.timeout)
            rows.append((m.name, verdict, detail, seconds))
            print(f"[{i}/{len(chosen)}] {verdict:8s} {m.name} ({seconds:.0f} s): {detail}", flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'mutation':{width}s}  verdict   s     catching test")
    for name, verdict, detail, seconds in rows:
        print(f"{name:{width}s}  {verdict:8s} {seconds:5.0f}  {detail}")
    bad = [r for r in rows if r[1] != "KILLED"]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} mutants killed in {time.perf_counter() - start:.0f} s"
          + (f"; not killed: {', '.join(r[0] for r in bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
