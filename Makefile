# `make demo`: set up and run the pipeline on the embedded profile. `make test`: set up and run the tests.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP_FLAGS ?= -q

.PHONY: install test demo bench clean-outputs

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.txt
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) run_original_generator.py
	$(PY) run_cnn.py
	$(PY) run_segmentation.py
	$(PY) compute_property_scores.py --algorithm v1
	$(PY) compute_property_scores.py --algorithm v2
	$(PY) compute_property_scores.py --algorithm hairstyle

bench: install
	$(PY) bench/bench_generation.py
	$(PY) bench/bench_embedded_quality.py

clean-outputs:
	rm -rf stylegan/synthesize_results stylegan/synthesize_results_filtered cnn/models cnn/log \
	       cnn/inference_result segmentation/segmentation_results segmentation/property_score_results
