# Quickstart: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/baton demo --out outputs/demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache

# One budgeted run on a GPU machine (docs/benchmarks.md, "Running on a GPU"); without CUDA it prints the plan.
# The system python3 on purpose: .venv does not travel to the GPU host. OUT (the device tool sets it) and BUDGET
# (seconds for the whole check) pass through; GPU_CHECK_ARGS takes the driver's other options (--parts, --cap).
BUDGET ?= 540
GPU_CHECK_ARGS ?=
.PHONY: gpu-check
gpu-check:
	$(PYTHON) benchmarks/gpu/check.py --budget $(BUDGET) $(if $(OUT),--out $(OUT)) $(GPU_CHECK_ARGS)
