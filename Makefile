# Two commands do all the set-up:  `make lab` (install + open the course)  and  `make test`.
PY ?= python3
PIP := $(PY) -m pip

.PHONY: install lab test test-perturbed lint checkpoints

install:
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps "torchattacks==3.5.1" "adv-lib==0.2.8"

lab: install
	$(PY) -m jupyter lab notebooks/

test: install
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-perturbed

# The course again, twice, on other arithmetic and other random draws (see advlab/config.py):
# - ADVLAB_JITTER=1e-6 moves the last bits of every weight: every checked output must still reproduce exactly
#   (one that flips sits on a rounding edge and would flip on another CPU);
# - ADVLAB_SEED=1 changes every seed the notebooks use: the printed numbers move, the claims (asserts) must hold.
PERTURBED := notebooks solutions
test-perturbed:
	ADVLAB_JITTER=1e-6 $(PY) -m pytest -p no:cacheprovider $(PERTURBED)
	ADVLAB_SEED=1 $(PY) -m pytest -p no:cacheprovider --nbval-claims-only $(PERTURBED)

lint:
	$(PY) -m ruff check advlab tests benchmarks conftest.py

# Retrain the shipped fast-profile checkpoints and check their recorded metrics.
checkpoints:
	$(PY) -m advlab.zoo build --ship
