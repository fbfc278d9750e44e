# Two commands matter on a fresh machine with Python 3.11 and PyPI:
#   make demo   runs the main job (the notebook chain on the embedded synthetic dataset)
#   make test   runs the whole test suite (the Spark tests need Java 17: .ci/run installs it)
# Both create .venv and install the kit into it when needed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
RUN_DIR ?= runs/demo
SCALE  ?= default
DEVICE ?= auto

.PHONY: demo test lab venv bench quality own-logs readme clean-venv

venv: $(STAMP)

# Reinstall when the dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,spark]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lurm_lite)" >/dev/null
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m lurm_lite run --dataset synthetic --scale $(SCALE) --run-dir $(RUN_DIR) --device $(DEVICE)

test: $(STAMP)
	$(PY) -m pytest -q

# Regenerates README.md's results block and docs/figures/ from the demo run.
readme: demo
	$(PY) -m lurm_lite readme --run-dir $(RUN_DIR)

# Jupyter refuses to start as root (the usual user in a container) without --allow-root.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)

bench: $(STAMP)
	mkdir -p benchmarks/results
	$(PY) benchmarks/boi.py --json benchmarks/results/boi.json
	$(PY) benchmarks/smen.py --json benchmarks/results/smen.json
	$(PY) benchmarks/spark.py --json benchmarks/results/spark.json

# Downstream AUC over seeds 0 1 2 (chain 01-05 per seed, default scale: long on a CPU) and the
# BoI-survival diagnostics; runs resume from runs/quality-default/. One seed: add --quick.
quality: $(STAMP)
	mkdir -p benchmarks/results
	$(PY) benchmarks/quality.py --json benchmarks/results/quality.json

# Three bring-your-own logs (ids-only TSV, genre lists, a 150-item Amazon category) through
# data_prep and the whole chain with no -p; runs in runs/own_logs/.
own-logs: $(STAMP)
	mkdir -p benchmarks/results
	$(PY) benchmarks/own_logs.py --json benchmarks/results/own_logs.json

clean-venv:
	rm -rf $(VENV)
