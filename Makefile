# seg_project: `make demo` runs the whole job on generated data; `make test` runs the tests.
# Both create .venv on first use and install everything into it.

PYTHON ?= python3
VENV ?= .venv
# Extra flags for `python -m venv`, e.g. VENV_FLAGS=--system-site-packages to reuse an
# environment that already holds your own torch and Detectron2 builds.
VENV_FLAGS ?=
# The same pins install CUDA builds on CUDA machines; set TORCH_PINS= to keep your own torch.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.seg_project-installed
DEMO_DIR ?= demo_output
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: install demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

$(STAMP): $(PY) setup.py tools/install_detectron2.py
	@echo "== installing torch, seg_project and its dependencies into $(VENV)"
	$(if $(strip $(TORCH_PINS)),$(PIP) install -q $(TORCH_PINS))
	$(PIP) install -q -e ".[dev]"
	@echo "== installing Detectron2"
	$(PY) tools/install_detectron2.py
	$(PIP) check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) tools/make_synthetic.py --out $(DEMO_DIR)/data
	$(PY) tools/dataset_stats.py $(DEMO_DIR)/data

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache
