# featuremap: make demo | make test | make bench
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

PROTO  := proto/featuremap/v1/featuremap.proto
BUF    := npx --yes @bufbuild/buf@1.75.0

.PHONY: demo test soak bench proto lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the project's dependencies change.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/featuremap demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The long variants of the fuzz, load and fault suites.
soak: $(STAMP)
	$(BIN)/python -m pytest -q -m soak

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_engine.py
	$(BIN)/python tests/benchmarks/bench_stream.py

# Regenerate the committed stubs (featuremap_pb2.py, _pb2_grpc.py, .pyi) from the proto.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=proto --grpc_python_out=proto \
		--pyi_out=proto $(PROTO)

lint: $(STAMP)
	cd proto && $(BUF) lint
	$(BIN)/hadolint deploy/Dockerfile
	$(BIN)/kubernetes-validate --strict $(filter-out %kustomization.yaml,$(wildcard deploy/k8s/*.yaml))

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
