# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# The project builds its own Python 3.12 environment with uv (from PyPI), from uv.lock.
SHELL := /bin/bash
# First Python 3.12 that actually runs (a pyenv shim may exist without a selected version).
PY312 ?= $(shell for p in /root/.pyenv/versions/3.12*/bin/python3.12 $$(command -v python3.12); do \
  "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && echo "$$p" && break; done)
UV := .tools/bin/uv
export UV_PYTHON := $(PY312)
export UV_PYTHON_DOWNLOADS := never
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline
PYTEST_ARGS ?=

.PHONY: setup demo test lint clean
setup: .venv/.synced

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==0.13.9

# Registry look-ups occasionally fail once on these machines: retry the sync.
# --compile-bytecode: every process (each rank, each test launch) would otherwise compile
# Megatron, transformers and wandb from source where PYTHONDONTWRITEBYTECODE is set: ~20 s of
# start-up per process (`import megatron.bridge` 35 s -> 14 s on 2 cores).
.venv/.synced: $(UV) uv.lock pyproject.toml
	@[ -n "$(PY312)" ] || { echo "No Python 3.12 found: run make PY312=/path/to/python3.12"; exit 1; }
	@for attempt in 1 2 3; do $(UV) sync --frozen --compile-bytecode && break; \
	  [ $$attempt = 3 ] && exit 1; echo "uv sync failed, retrying ($$attempt)"; sleep 5; done
	touch $@

# GRPO on a tiny model, 2 CPU processes; then checks that it learned (see README).
demo: setup
	.venv/bin/python -m oumi_megatron.testing.tiny_models llama runs/tiny_llama_hf
	OMP_NUM_THREADS=1 env -u WANDB_MODE .venv/bin/torchrun --standalone --nproc-per-node 2 \
	  -m oumi_megatron train -c configs/recipes/tiny_grpo_cpu.yaml megatron.overwrite_output_dir=true
	.venv/bin/python -m oumi_megatron.demo_report runs/tiny_grpo_cpu

# Two pytest workers, one test file each at a time: a multi-process test leaves a core idle
# while its ranks wait on each other or on start-up, which the other worker fills.
test: setup
	.venv/bin/pytest tests -q -n 2 --dist loadfile --durations=30 $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check src tests scripts benchmarks notebooks && .venv/bin/ruff format --check src tests scripts benchmarks notebooks

clean:
	rm -rf runs .pytest_cache
