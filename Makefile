# The two commands of the README:  `make demo` (the main job) and `make test` (the suite).
# Each creates or reuses the virtual environment $(VENV) and installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo

.PHONY: setup demo test clean

setup:
	bash scripts/setup_env.sh $(VENV)

# Main job (until the full transfer demo lands): synthetic data, then a short MoCo v2 pretraining
# with the kNN monitor. CPU, about two minutes.
demo: setup
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/mocobench data synth $(DEMO_DIR)/data
	$(VENV)/bin/mocobench pretrain --data $(DEMO_DIR)/data/train --out $(DEMO_DIR)/pretrain \
	    --method moco_v2 --arch resnet18 --image-size 64 --batch-size 64 --queue-size 1024 \
	    --epochs 15 --moco-m 0.99 --workers 1 \
	    --knn-train $(DEMO_DIR)/data/train --knn-val $(DEMO_DIR)/data/val
	@echo "demo done: checkpoints and metrics in $(DEMO_DIR)/pretrain"

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf runs .pytest_cache
