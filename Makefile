# Set-up and the two README commands. `make demo` and `make test` create the venv when needed.
# torch/torchvision go in first, then sam2 without build isolation (its isolated build would
# download another torch and fail on a CUDA build it can skip), deepspeed the same way (its build
# imports torch; ops are compiled when first used), then the package itself.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
SAM2_SPEC ?= sam2==1.1.0
DEEPSPEED_SPEC ?= deepspeed==0.19.8
STAMP := $(VENV)/.revseg-installed

.PHONY: install demo test test-fast lint typecheck check bench serve clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PY) -c "import sam2" 2>/dev/null || SAM2_BUILD_CUDA=0 $(PIP) install --quiet --no-build-isolation $(SAM2_SPEC)
	$(PY) -c "import deepspeed" 2>/dev/null || DS_BUILD_OPS=0 $(PIP) install --quiet --no-build-isolation $(DEEPSPEED_SPEC)
	$(PIP) install --quiet -e ".[dev,sam2,train,deepspeed,serve,ui,ray]"
	# reference metrics for the tests; it declares opencv-python, which would overwrite the
	# contrib build's cv2/ folder, so it goes in without dependencies (scikit-image is in [dev])
	$(PIP) install --quiet --no-deps vos-benchmark==0.1.0
	touch $(STAMP)

demo: install
	$(VENV)/bin/revseg demo --out demo-out

test: install
	$(PY) -m pytest -q

# The edit-test loop: the tests that build no model (CI and `make test` run everything).
test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check revseg_agent tests benchmarks
	$(VENV)/bin/ruff format --check revseg_agent tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

check: lint typecheck test

bench: install
	$(PY) benchmarks/classical_tracker_davis.py
	$(PY) benchmarks/graph_overhead.py
	$(PY) benchmarks/metrics_speed.py
	$(PY) benchmarks/group_rollout.py

# `make serve PORT=8123`: the graph of langgraph.json on loopback (inmem runtime, no browser,
# no analytics); installs nothing beyond `make install`, so it works offline.
PORT ?= 2024
serve: install
	LANGGRAPH_CLI_NO_ANALYTICS=1 $(VENV)/bin/langgraph dev --host 127.0.0.1 --port $(PORT) --no-browser

clean:
	rm -rf $(VENV) .cache demo-out .pytest_cache .mypy_cache .ruff_cache
