# The two commands of the README:  `make demo` (the main job) and `make test` (the suite).
# Each creates or reuses the virtual environment $(VENV) and installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo

.PHONY: setup demo demo-example test clean

setup:
	bash scripts/setup_env.sh $(VENV)

# Main job: synthetic data (classification, COCO, VOC), MoCo v2 and supervised pretraining, then the
# demo suite (knn, linear, finegrained, coco_det, voc_det on MoCo v2 / supervised / random init) and
# the report in runs/demo/report/. CPU, about 15 minutes. Re-running resumes (finished steps are skipped).
# Its detection columns (100 iterations on synthetic shapes) show that the path runs, not a ranking: over 3 seeds
# no two rows' AP50 differ by more than a Welch t of 1.4 (benchmarks/demo_detection_seeds.py, benchmarks/RESULTS.md).
DEMO_DATA := $(DEMO_DIR)/data
DEMO_COMMON := --arch resnet18 --image-size 64 --batch-size 64 --epochs 15 --workers 1 --resume auto \
	--knn-train $(DEMO_DATA)/classification/train --knn-val $(DEMO_DATA)/classification/val --knn-every 5
# MoCo v2 sized for the demo's 600 training images: K 128 (two batches, a fifth of the images, so the queue is not
# most of the data set as K 512 was) and T 0.1 (the MoCo CIFAR demo's moco_t; m 0.99 is its moco_m too). Measured
# one change at a time, 2 seeds (benchmarks/small_data_levers.py): kNN 71.0 against 49.5 with K 512 / T 0.2 and
# 49.0 at random init; T 0.1 alone 67.0, K 128 alone 61.0 (README "Small images and small data sets").
demo: setup
	test -f $(DEMO_DATA)/segmentation/classes.txt || (rm -rf $(DEMO_DATA) && $(VENV)/bin/mocobench data synth $(DEMO_DATA))
	$(VENV)/bin/mocobench pretrain --data $(DEMO_DATA)/classification/train --out $(DEMO_DIR)/moco_v2 \
	    --method moco_v2 --queue-size 128 --moco-m 0.99 --moco-t 0.1 $(DEMO_COMMON)
	$(VENV)/bin/mocobench pretrain --data $(DEMO_DATA)/classification/train --out $(DEMO_DIR)/supervised \
	    --method supervised --lr-schedule cosine $(DEMO_COMMON)
	$(VENV)/bin/mocobench suite moco_v2=$(DEMO_DIR)/moco_v2/checkpoint_last.pth \
	    supervised=$(DEMO_DIR)/supervised/checkpoint_last.pth random --arch resnet18 \
	    --preset demo --data-root $(DEMO_DATA) --out $(DEMO_DIR)/suite --report $(DEMO_DIR)/report \
	    --title "mocobench demo: MoCo v2, supervised and random init on the embedded synthetic data"
	@echo "demo done: the report is $(DEMO_DIR)/report/report.md (also report.html, report.csv, figures)"

# The committed example reports/demo/ is a copy of one demo run's report, refreshed on purpose (a run never
# writes into the checkout: CPU runs differ in the last digits between machines and thread counts).
demo-example: demo
	rm -rf reports/demo && cp -r $(DEMO_DIR)/report reports/demo

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf runs .pytest_cache
