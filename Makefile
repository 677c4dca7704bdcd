# Two commands matter: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.uniq_tf-installed
OUT ?= outputs/demo
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export CUDA_VISIBLE_DEVICES :=

.PHONY: venv demo test test-fast bench bench-quick lint clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/uniq-train --output_dir=$(OUT)/train --grid_bits=5
	$(BIN)/uniq-export-tflite --model=$(OUT)/train/quantized_model.h5 \
		--output_dir=$(OUT)/tflite --dataset=digits
	$(BIN)/uniq-export-finn --model=$(OUT)/train/quantized_model.h5 \
		--output_dir=$(OUT)/fpga --overwrite
	@echo
	@echo "Demo outputs are in $(OUT)/:"
	@echo "  $(OUT)/train   float and UNIQ models (.h5), history.json, summary.json (accuracies, BOPs), bops.txt"
	@echo "  $(OUT)/tflite  float and int8 TFLite models, packed codebook weights, size report"
	@echo "  $(OUT)/fpga    finn_bundle/ (model.onnx, codebooks.npz, descriptor.json, FINN configs) and summary.json (qonnx parity)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  # the inner loop: everything but the tests marked slow
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run_all --quick

lint: $(STAMP)
	$(BIN)/ruff check uniq_tf tflite_export fpga_export examples tests bench

clean:
	rm -rf outputs .pytest_cache .hypothesis
