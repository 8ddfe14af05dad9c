# swiftserve: the two commands of the README, and the pieces they are made of.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0

.PHONY: install run test lint bench

# torch first: a bare `torch` requirement would pull the CUDA build; pick yours here.
install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "torch==$(TORCH_VERSION)"
	$(PYTHON) -m pip install -e ".[test]"

# The main job: the OpenAI-compatible server on the built-in default models.
run: install
	swiftserve launch

# Without a GPU the Triton kernels run on the CPU through Triton's interpreter; with one, natively.
test:
	TRITON_INTERPRET=$$($(PYTHON) -c "import torch; print(0 if torch.cuda.is_available() else 1)") \
		$(PYTHON) -m pytest -q

# ruff check and ruff format --check over the whole tree (CI runs this before the tests).
lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

bench:
	$(PYTHON) benchmarks/throughput.py
