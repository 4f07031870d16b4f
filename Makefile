# The two commands of the README: `make demo` and `make test`. Both set up .venv first if needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

DATA      := data/digits
JUDGE     := runs/demo/classifier_digits
DEMO_RUN  := runs/demo/quickstart-$(shell date -u +%Y%m%d-%H%M%S)
# CPU threads of the ACGAN run (the judge's recipe pins its own: train.threads). `make demo THREADS=1`
# trains exactly the run of docs/results.md's 3-seed study (seed 0), which was trained on one thread.
THREADS   ?= $(shell nproc)
CPU_LAUNCH := $(VENV)/bin/accelerate launch --cpu --num_processes 1 --num_cpu_threads_per_process $(THREADS) --num_machines 1 --mixed_precision no --dynamo_backend no

.PHONY: demo test setup clean-demo gpu-check gpu-bench gpu-wheels mutants

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing distgen and its dependencies into $(VENV) (torch and friends: a few minutes the first time)"
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q --durations=25

# Digits shards -> a digit judge (once) -> ACGAN quickstart on the CPU -> accuracy of 1,000 generated digits,
# sampled from the run's EMA generator (launch/evaluate.py samples from it when the run has one).
demo: $(STAMP)
	@test -f $(DATA)/index.json || $(PY) -m shards digits --out $(DATA)
	@test -e $(JUDGE)/checkpoints/latest || $(CPU_LAUNCH) launch/train.py recipes/classifier_digits.yaml run.dir=$(JUDGE) --resume auto
	$(CPU_LAUNCH) launch/train.py recipes/quickstart.yaml run.dir=$(DEMO_RUN) eval.classifier=$(JUDGE)
	@$(PY) launch/evaluate.py $(DEMO_RUN) --metrics acc --num-samples 1000 > $(DEMO_RUN)/eval/demo.json
	@$(PY) -c "import json, yaml; r = json.load(open('$(DEMO_RUN)/eval/demo.json')); \
	j = json.load(open('$(JUDGE)/summary.json'))['last']['acc']['value']; \
	k = yaml.safe_load(open('$(DEMO_RUN)/config.yaml'))['train']['ema_kimg']; \
	c, w = yaml.safe_load(open('$(JUDGE)/config.yaml')), yaml.safe_load(open('recipes/classifier_digits.yaml')); \
	old = any(c[s].get(key) != v for s in ('model', 'optim', 'train') for key, v in w[s].items()); \
	g = f'the EMA generator (half-life {k:g} kimg)' if k else 'the generator'; \
	print(f\"\\nrun dir:   $(DEMO_RUN)\\ngrid:      {r['grid']}  (rows = noise, columns = digits 0..9)\\n\" \
	      f\"judge:     $(JUDGE): {100 * j:.1f}% on the real test digits\" \
	      f\"{' (trained by an older recipes/classifier_digits.yaml: make clean-demo retrains it)' if old else ''}\\n\" \
	      f\"accuracy of {r['num_samples']} digits (100 per class) from {g} under the judge: {100 * r['acc']:.1f}%\")"

# On a CUDA machine: every family in bf16/fp16/compile, grid + in-training FID, exact resume, a short
# benchmark grid; one JSON line per check, under 8 minutes. Without CUDA it says so and exits 0.
# The GPU targets run the venv's python; on a bare GPU machine (its own python3 and torch, carried wheels:
# launch/gpu_session.sh) name it: `make gpu-bench GPU_PY=python3` (no venv is then made).
GPU_PY       ?= $(PY)
GPU_BUDGET_S ?= 420
GPU_DEPS     := $(if $(filter $(PY),$(GPU_PY)),$(STAMP))

gpu-check: $(GPU_DEPS)
	$(GPU_PY) launch/gpu_check.py

# On a CUDA machine: the harness against a hand-written loop on the same nets (benchmarks/bare_loops.py):
# dcgan, wgan_gp, sagan at batch 64 and 256, fp32 and bf16, eager / compile / captured (train.cuda_graph);
# img/s, MFU and harness/bare per configuration, device and torch version, in one JSON line, inside 7 minutes
# (configurations left when the budget is spent are listed as skipped). docs/benchmarks.md records the figures.
gpu-bench: $(GPU_DEPS)
	$(GPU_PY) benchmarks/gpu.py --families dcgan wgan_gp sagan --batches 64 256 --precisions fp32 bf16 \
	    --channels-last 0 --compile 0 1 --captured 0 1 --bare 1 --steps 40 --budget-s $(GPU_BUDGET_S)

# The packages a bare GPU machine lacks (it has torch, accelerate and most of the rest; no network), as
# wheels for its Python 3.12, into .whl/ (git-ignored) for launch/gpu_session.sh. Needs pip's network here.
gpu-wheels:
	python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl \
	    webdataset==1.0.2 braceexpand==0.1.7 torch-fidelity==0.4.0

# Break one line of the core at a time (tests/mutations.py's list) and rerun the tests that must catch it:
# a table of killed/survived mutants; exit 1 if any survived or no longer applies. Slow: not part of `make test`.
mutants: $(STAMP)
	$(PY) tests/mutations.py

clean-demo:
	rm -rf runs/demo $(DATA)
