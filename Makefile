# featuremap: make demo | make test | make test-cpus | make test-gpu | make fuzz | make test-fast | make bench | make bench-cuda | make lock | make lint
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

PROTO  := featuremap/v1/featuremap.proto
BUF    := npx --yes @bufbuild/buf@1.75.0

.PHONY: demo test test-gpu fuzz test-cpus test-fast soak bench bench-cuda proto lock lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

RUNTIME := $(VENV)/.installed-runtime

# Reinstall when the project's dependencies change. The demo needs the package alone, installed as
# a user installs it (about a third of the venv the tests need: no scipy, browser driver or type
# checker). The tests install it editable with the test extra; the linters, the CUDA compiler and
# the fuzzer come only with the targets that run them (their own stamps).
$(RUNTIME): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q .
	touch $(RUNTIME)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP) $(RUNTIME)

$(VENV)/.installed-%: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,$*]'
	touch $@

demo: $(RUNTIME)
	$(BIN)/featuremap demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The CUDA path without a GPU: its kernels under Numba's simulator, and compiled to PTX for a Hopper
# GPU (the gpu-dev extra: numba-cuda, NVVM, NVRTC). make test skips these where it is not installed.
test-gpu: $(VENV)/.installed-gpu-dev
	$(BIN)/python -m pytest -q tests/engine/test_cuda.py

# Coverage-guided fuzzing of image decoding (the fuzz extra: atheris).
fuzz: $(VENV)/.installed-fuzz
	$(BIN)/python -m pytest -q tests/service/test_fuzz_atheris.py

# The engine and pose tests again, as two other x86-64 CPUs compile them: Haswell (AVX2 + FMA,
# 8 lanes; the empty feature list matters: the name alone keeps this host's AVX-512 features)
# and generic x86-64 (SSE2, no FMA). Each has its own kernel cache (and calibration); NumPy's
# and OpenCV's dispatch is narrowed alike. A few minutes each on 2 cores, cold.
CPU_TESTS := tests/engine tests/pose/test_pose.py tests/pose/test_pose_scenes.py tests/pose/test_pose_windows.py \
	--ignore=tests/engine/test_cuda.py
HASWELL := NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= NUMBA_CACHE_DIR=build/numba-haswell \
	NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" OPENCV_CPU_DISABLE=AVX512-SKX,AVX512-CLX OPENCV_IPP=avx2
GENERIC := NUMBA_CPU_NAME=generic NUMBA_CPU_FEATURES= NUMBA_CACHE_DIR=build/numba-generic \
	NPY_DISABLE_CPU_FEATURES="X86_V3 X86_V4 AVX512_ICL AVX512_SPR" \
	OPENCV_CPU_DISABLE=SSE4.1,SSE4.2,AVX,FP16,AVX2,AVX_VNNI,AVX512-SKX,AVX512-CLX OPENCV_IPP=sse42
test-cpus: $(STAMP)
	$(HASWELL) $(BIN)/python -m pytest -q -p no:cacheprovider $(CPU_TESTS)
	$(GENERIC) $(BIN)/python -m pytest -q -p no:cacheprovider $(CPU_TESTS)

# The engine and unit tests: under a minute once the kernel cache is warm.
FAST := tests/engine --ignore=tests/engine/test_cuda.py tests/service/test_wire.py tests/client/test_client_video_render.py \
	tests/service/test_proto.py
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(FAST)

# The long variants of the fuzz, load and fault suites.
soak: $(STAMP)
	$(BIN)/python -m pytest -q -m soak

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_engine.py
	$(BIN)/python tests/benchmarks/bench_stream.py
	$(BIN)/python tests/benchmarks/bench_pose.py
	$(BIN)/python tests/benchmarks/bench_pose_scenes.py
	$(BIN)/python tests/benchmarks/bench_http.py
	$(BIN)/python tests/benchmarks/bench_thresholds.py

# The CUDA path beside torch/cuDNN and the CPU engine: needs an NVIDIA GPU and the
# cuda extra (DEVELOPERS.md says how to run it on the device machine).
bench-cuda: $(VENV)/.installed-cuda
	$(BIN)/python tests/benchmarks/bench_cuda.py

# Regenerate the committed stubs (featuremap_pb2.py, _pb2_grpc.py, .pyi) from the proto.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . -I proto --python_out=. --grpc_python_out=. \
		--pyi_out=. $(PROTO)

# The image's dependencies, resolved once and pinned (deploy/constraints.txt): what pip would
# install for featuremap with the http extra (the image serves the gateway) on this Python, every
# package at its exact version.
lock: $(STAMP)
	mkdir -p build
	$(BIN)/python -m pip install -q --dry-run --ignore-installed --report build/lock.json '.[http]'
	$(BIN)/python -c "import json; r = json.load(open('build/lock.json')); \
	print('# The image installs exactly these (make lock refreshes them).'); \
	print(*sorted(f\"{i['metadata']['name']}=={i['metadata']['version']}\" for i in r['install'] \
	if i['metadata']['name'] != 'featuremap'), sep='\n')" > deploy/constraints.txt

# mypy and import-linter read the package as users install it (an editable
# install hides it behind an import hook): a fresh copy in build/lint.
LINT_SITE := build/lint
TYPED := -m featuremap.wire -m featuremap.options -m featuremap.client -m featuremap.client.client \
	-m featuremap.client.settings -m featuremap.client.channel -m featuremap.client.render \
	-m featuremap.client.tracking -m featuremap.client.watch \
	-m featuremap.client.video

lint: $(VENV)/.installed-lint
	$(BUF) lint
	$(BIN)/hadolint deploy/Dockerfile
	$(BIN)/kubernetes-validate --strict $(filter-out %kustomization.yaml,$(wildcard deploy/k8s/*.yaml))
	promtool check rules deploy/prometheus/alerts.yaml
	rm -rf $(LINT_SITE) build/lib build/bdist.*
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation --no-compile --target $(LINT_SITE) .
	cd $(LINT_SITE) && $(CURDIR)/$(BIN)/lint-imports $(CURDIR)/pyproject.toml
	MYPYPATH=$(LINT_SITE) $(BIN)/mypy --strict $(TYPED)
	MYPYPATH=$(LINT_SITE) $(BIN)/mypy --strict examples/find_logo.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .import_linter_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
