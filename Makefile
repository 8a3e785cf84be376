# The two commands of the README, each doing its own set-up in .venv.
#   make report   run the default experiment workflow and write reports/
#                 (make report EXPERIMENT=experiments/full.yaml: another experiment file)
#   make test     lint, then the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py csrc/*.c csrc/*.h csrc/py/*.c csrc/build.py | cksum | cut -d' ' -f1)
CORES ?= 2
EXPERIMENT ?=

.PHONY: report test lint install clean

install: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

report: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) $(if $(EXPERIMENT),--configfile $(EXPERIMENT))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info nanomq/_native*.so nanomq/_native.c nanomq/_ringcore*.so nanomq/_logcore*.so nanomq/_msgcore*.so nanomq/_reccore*.so .snakemake
