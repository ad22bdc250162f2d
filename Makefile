# Two commands on a fresh machine (see README):  make demo   |   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a plain `torch` pulls GBs of CUDA wheels. Override for a GPU machine,
# e.g. make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml .ci/system-deps.sh
	bash .ci/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/aapt-world demo

test: setup lint
	MUJOCO_GL=osmesa SDL_VIDEODRIVER=dummy $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check aapt_world envs agents training tests

bench: setup
	$(BIN)/aapt-world bench collect

clean:
	rm -rf $(VENV) outputs .pytest_cache
