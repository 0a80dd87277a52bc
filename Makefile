# The two commands that are the contract with a new user: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install install-dev install-bench lint clean eval-ml100k eval-ml-latest-small

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Stamps make re-installs happen only when pyproject.toml or the lock changes. constraints.txt pins every
# dependency to versions that work together (see its header); `make install-bench` adds the benchmark peers.
$(VENV)/.installed: pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-bench: $(VENV)/.installed-bench

# The demo runs every stage on the bundled ml-latest-small, 5-core (3.6k items), with the budget in
# eval/configs/demo.json: 50 fine-tuning steps (bf16 autocast where the CPU has it natively), a 20-step cross-encoder, a seeded sample of 200
# users per slice, few-shot points 0/3/20. It prints a stage timing table at the end. `recsys-llm demo` without
# --config runs the library defaults (every user, longer training).
demo: $(VENV)/.installed
	$(VENV)/bin/recsys-llm demo --run-dir runs/demo --config eval/configs/demo.json

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

# Comparison tables (see eval/README.md); ml-100k needs ../shared/data.
eval-ml100k: $(VENV)/.installed
	$(PY) eval/run.py --recipe ml100k

eval-ml-latest-small: $(VENV)/.installed
	$(PY) eval/run.py --recipe ml-latest-small

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check recsys_llm tests
	$(PY) -m mypy recsys_llm

clean:
	rm -rf runs/ .pytest_cache .mypy_cache .ruff_cache
