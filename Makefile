# The README's two commands: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST := $(BIN)/python -m pytest

.PHONY: install demo test test-slow test-slurm test-all clean

# Installs with constraints.txt so torch stays the CPU wheel (a bare `torch` pulls CUDA builds).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Prepare + train the bundled offline demo on CPU, then ask the trained model one question.
demo: install
	rm -rf runs/demo
	$(BIN)/smoldist prepare
	$(BIN)/smoldist train
	@echo "--- the trained model answers (greedy):"
	$(BIN)/smoldist chat runs/demo "What sound does a cow make?"
	$(BIN)/smoldist chat runs/demo "Ada has 12 apples and buys 9 more. How many apples does Ada have now?"

# The default suite: fast, single-process.
test: install
	$(PYTEST) -q -m "not slow and not slurm and not gpu"

# Multi-process CPU runs (DDP, DeepSpeed): real `accelerate launch` subprocesses.
test-slow: install
	$(PYTEST) -q -m "slow and not slurm and not gpu"

# A real two-node Slurm cluster on this machine (root; installs Debian's slurm packages if missing).
test-slurm: install
	$(PYTEST) -q -m "slurm"

test-all: test test-slow test-slurm

clean:
	rm -rf runs prepared .pytest_cache
