# The quickstart's two commands (README): `make demo` and `make test`.
#
# Each creates the virtual environment $(VENV) when it is missing, installs exactly what the README's
# "Installing" section installs, and runs the command. Re-running reuses the environment: the install
# step is one stamp file ($(STAMP)) that is only remade when its recipe's inputs change (pyproject.toml,
# this Makefile), so a second `make test` installs nothing. This file is the one copy of the install
# steps: `.ci/run` calls `make test`, pixi's tasks run the same commands (tests/test_packaging.py).
#
#   make demo            the whole pipeline on the embedded MNIST subset (CPU, ~7 minutes)
#   make test            the test suite (slow tests skipped; `make test PYTEST_ARGS="-m slow"` runs them)
#   make env             only the set-up
#   make lint            ruff
#   make clean-env       remove the environment

PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.ctbench-installed

# The install steps (README "Installing", pip route). torch is pinned to the build these machines carry;
# on a GPU cluster override TORCH_PINS with the CUDA build you need, e.g. make env TORCH_PINS="torch torchvision".
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= test,lint
LIRPA ?= auto-lirpa==0.3
LIRPA_DEPS ?= appdirs packaging

.PHONY: env demo test lint clean-env

env: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install -q --no-deps $(LIRPA)
	$(BIN)/python -m pip install -q $(LIRPA_DEPS)
	$(BIN)/python -c "import torch, ctbench; print('torch', torch.__version__, '| ctbench', ctbench.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores all --configfile config/demo.yaml

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" ruff check .

clean-env:
	rm -rf $(VENV)
