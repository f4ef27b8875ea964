# `make demo`: set up and run the pipeline on the embedded profile. `make test`: set up and run the tests.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP_FLAGS ?= -q
# An extra package index for the torch/torchvision wheels. Empty: PyPI's default wheels (with CUDA libraries, ~6.5 GB).
# On a CPU-only machine, the CPU wheels are a fraction of that: make demo TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
TORCH_FLAGS := $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))

.PHONY: install browser test demo app bench clean-outputs

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) $(TORCH_FLAGS) -r requirements.txt
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the face-app browser tests (tests/test_app.py); they skip where apt cannot install it.
browser:
	@test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || \
	  ( (apt-get install -y -q chromium chromium-driver || (apt-get update -q && apt-get install -y -q chromium chromium-driver)) \
	    || echo "note: could not install chromium + chromium-driver with apt-get; browser tests will skip" )

test: install browser
	$(PY) -m pytest -q tests

# Stages 1-9 in order (common/pipeline.py DEMO_STEPS), then reports/<run-id>/index.html; killed, it resumes.
demo: install
	$(PY) run_pipeline.py

# The face app on http://127.0.0.1:7860 (after `make demo`).
app: install
	$(PY) run_app.py

bench: install
	$(PY) bench/bench_generation.py
	$(PY) bench/bench_embedded_quality.py
	$(PY) bench/bench_property_cnn.py
	$(PY) bench/bench_vectorfind.py
	$(PY) bench/bench_app.py

# Every output of stages 1-9 and the reports (common/artifacts.py declares them and what is kept); refused while a run
# holds the folder. `$(PY) -m common.outputs --dry-run` lists them; `--quick` / `--output-root DIR` for another root.
clean-outputs: install
	$(PY) -m common.outputs
