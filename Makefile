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
DEMO_CONFIG ?= configs/quick_schedules/mask_rcnn_R_18_FPN_cells_quick.yaml
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

# The demo rebuilds $(DEMO_DIR)/ (its own folder) from scratch each time.
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	@echo "== 1/6 generating a synthetic dataset in the course layout"
	$(PY) tools/make_synthetic.py --out $(DEMO_DIR)/data
	$(PY) tools/dataset_stats.py $(DEMO_DIR)/data
	@echo "== 2/6 training $(DEMO_CONFIG) on the CPU, evaluating every epoch"
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) \
		DATASETS.CELLS.ROOT $(DEMO_DIR)/data OUTPUT_DIR $(DEMO_DIR)/train
	@echo "== 3/6 writing the submission for the test images with the best model"
	$(PY) tools/predict.py --config-file $(DEMO_CONFIG) --weights $(DEMO_DIR)/train/model_best.pth \
		--images $(DEMO_DIR)/data/test_release --id-map $(DEMO_DIR)/data/test_image_name_to_ids.json \
		--out $(DEMO_DIR)/submission --zip --format coco geojson label-tiff
	@echo "== 4/6 drawing ground truth next to predictions (validation images, at the run's operating point)"
	$(PY) tools/visualize.py --config-file $(DEMO_CONFIG) --weights $(DEMO_DIR)/train/model_best.pth \
		--dataset cells_val --out $(DEMO_DIR)/pictures/val \
		DATASETS.CELLS.ROOT $(DEMO_DIR)/data
	@echo "== 5/6 drawing the submission's predictions (test images, at the run's operating point)"
	$(PY) tools/visualize.py --results $(DEMO_DIR)/submission/test-results.json \
		--images $(DEMO_DIR)/data/test_release --id-map $(DEMO_DIR)/data/test_image_name_to_ids.json \
		--config-file $(DEMO_DIR)/train/config.yaml --out $(DEMO_DIR)/pictures/test
	@echo "== 6/6 plotting the training curves"
	$(PY) tools/plot_curves.py $(DEMO_DIR)/train --out $(DEMO_DIR)/curves
	@echo
	@echo "Demo done. Everything is in $(DEMO_DIR)/:"
	@echo "  data/        the generated dataset (course layout)"
	@echo "  train/       the run: report.html, log.txt, metrics.json, model_best.pth, config.yaml"
	@echo "  submission/  test-results.json and test-results.zip (checked); geojson/ and labels/:"
	@echo "               the test images' cells at the run's operating point (train/operating_point.json)"
	@echo "  pictures/    val/ (ground truth | prediction) and test/ (predictions)"
	@echo "  curves/      loss.png, ap.png, lr.png, pathology.png, ... and summary.md"
	@echo
	@echo "The run report (settings, curves, final AP and pathology tables, class confusion,"
	@echo "best and worst validation images), written at the end of training:"
	@echo "  $(DEMO_DIR)/train/report.html"

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache
