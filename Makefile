# Two commands do all the set-up:  `make lab` (install + open the course)  and  `make test`.
PY ?= python3
PIP := $(PY) -m pip

.PHONY: install lab test lint checkpoints

install:
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps "torchattacks==3.5.1"

lab: install
	$(PY) -m jupyter lab notebooks/

test: install
	$(PY) -m pytest

lint:
	$(PY) -m ruff check advlab tests benchmarks conftest.py

# Retrain the shipped fast-profile checkpoints and check their recorded metrics.
checkpoints:
	$(PY) -m advlab.zoo build --ship
