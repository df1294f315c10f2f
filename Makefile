# inferd — developer entry points. `make run` and `make test` are the two set-up commands.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 8001
MODELS ?= models
PROTO_OUT := clients/python
PROTOS := $(wildcard protos/inferd/v1/*.proto)
# The Open Inference Protocol v2 (package `inference`, someone else's contract) is generated as the Python
# package inferd.oip.v2 through protoc's virtual path (VIRTUAL=DISK), so no top-level `inference` package exists.
OIP_PROTOC := -Iinferd/oip/v2=protos/inference/v2 inferd/oip/v2/grpc_service.proto
# Tests run grpcurl and the inferd command: the venv's bin folder goes first on PATH.
TEST_ENV := PATH=$(abspath $(VENV))/bin:$$PATH

.PHONY: help venv proto proto-lint proto-breaking proto-check clients clients-node examples run test test-unit test-integration test-e2e test-gpu gpu-check lint typecheck ci bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# PyTorch: TORCH=none leaves it out (the torch engine then reports itself unavailable and the
# tabular_torch example is skipped); TORCH_INDEX=URL installs torch alone from that index first (e.g.
# PyTorch's CPU wheel index: see the install selector on pytorch.org), everything else from pip's
# configured index. Empty (the default) = pip's configured index for torch too. README "Set up".
TORCH ?= cpu
TORCH_INDEX ?=
comma := ,
EXTRAS := onnxruntime,examples,dev$(if $(filter none,$(TORCH)),,$(comma)torch)

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(if $(and $(TORCH_INDEX),$(filter-out none,$(TORCH))),$(PIP) install -q -c constraints.txt --no-deps --index-url '$(TORCH_INDEX)' torch)
	$(PIP) install -q -c constraints.txt -e clients/python -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed  ## create .venv with the server, SDK, engines and dev tools (TORCH=none, TORCH_INDEX=URL)

proto: $(VENV)/.installed  ## regenerate the Python code from protos/
	$(PY) -m grpc_tools.protoc -I protos --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) $(PROTOS)
	$(PY) -m grpc_tools.protoc $(OIP_PROTOC) --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT)

BUF := .cache/buf/node_modules/.bin/buf

$(BUF):
	mkdir -p .cache/buf && cd .cache/buf && npm init -y >/dev/null && npm install --no-audit --no-fund @bufbuild/buf@1.75.0

proto-lint: $(BUF)  ## lint protos/ with buf's STANDARD rules (buf from the npm registry)
	cd protos && ../$(BUF) lint && echo "protos are lint-clean (buf STANDARD)"

# buf breaking against an earlier commit's protos/ (HEAD~1 by default; PROTO_AGAINST=<ref> to choose);
# an intended break: [proto-breaking] in the commit message or INFERD_PROTO_BREAKING_OK=1. docs/protocol.md.
proto-breaking: $(BUF)  ## fail when protos/ breaks the contract of the previous commit (buf breaking, FILE rules)
	BUF=$(abspath $(BUF)) bash scripts/proto_breaking.sh

proto-check: $(VENV)/.installed  ## fail when the generated code is stale
	@rm -rf .cache/proto && mkdir -p .cache/proto
	@$(PY) -m grpc_tools.protoc -I protos --python_out=.cache/proto --grpc_python_out=.cache/proto --pyi_out=.cache/proto $(PROTOS)
	@$(PY) -m grpc_tools.protoc $(OIP_PROTOC) --python_out=.cache/proto --grpc_python_out=.cache/proto --pyi_out=.cache/proto
	@diff -r -q --exclude=__pycache__ --exclude=__init__.py .cache/proto/inferd/v1 $(PROTO_OUT)/inferd/v1 \
	  && diff -r -q --exclude=__pycache__ --exclude=__init__.py .cache/proto/inferd/oip $(PROTO_OUT)/inferd/oip \
	  && echo "generated code is up to date" \
	  || (echo "generated code is stale: run 'make proto' and commit the result"; exit 1)

$(MODELS)/.built: $(VENV)/.installed $(wildcard examples/*.py)
	$(PY) -m examples.build --output $(MODELS)
	touch $@

examples: $(MODELS)/.built  ## build the example model repository (from code, no downloads)

run: $(MODELS)/.built  ## serve the example models on $(HOST):$(PORT)
	$(VENV)/bin/inferd serve --repository $(MODELS) --host $(HOST) --port $(PORT)

test: $(VENV)/.installed  ## run the whole test suite (GPU tests skip without a GPU)
	$(TEST_ENV) $(PY) -m pytest -q

test-unit: $(VENV)/.installed  ## run only the unit tests
	$(TEST_ENV) $(PY) -m pytest -q tests/unit

test-integration: $(VENV)/.installed  ## run only the integration tests (in-process server)
	$(TEST_ENV) $(PY) -m pytest -q tests/integration

test-e2e: $(VENV)/.installed  ## run only the end-to-end tests (subprocess server, grpcurl, the inferd command)
	$(TEST_ENV) $(PY) -m pytest -q -m e2e tests/e2e

.PHONY: oip-client-venv
# tritonclient pins protobuf<7 and registers the protobuf package `inference` too, so it never shares .venv
oip-client-venv: $(VENV)/.installed  ## tritonclient[grpc] in its own venv, .cache/venvs/tritonclient (the OIP tests make it on first use)
	$(PY) -m tests.e2e.tritonclient_venv

test-gpu: $(VENV)/.installed  ## run only the GPU tests (each skips with its reason where no GPU/TensorRT)
	$(TEST_ENV) $(PY) -m pytest -q -ra -m gpu tests/gpu

gpu-check:  ## GPU tests + engine benchmark -> docs/gpu-results.md (one command; see scripts/gpu_check.sh)
	bash scripts/gpu_check.sh

.PHONY: dashboard-png
dashboard-png: $(VENV)/.installed  ## docs/images/dashboard.png: the Grafana dashboard drawn from a real Prometheus scrape of a 90 s mixed load
	INFERD_REQUIRE_PROMETHEUS=1 INFERD_DASHBOARD_PNG=$(abspath docs/images/dashboard.png) INFERD_DASHBOARD_SECONDS=90 \
	  $(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider tests/e2e/test_prometheus_scrape.py -k mixed_load

lint: $(VENV)/.installed  ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed  ## mypy
	$(VENV)/bin/mypy server engines examples clients/python/inferd

# Clients in other languages, each built from protos/ into .cache/clients/<lang>/ (README "Other languages").
clients: clients-go clients-java clients-cpp clients-node  ## build the Go, Java, C++ and Node.js example clients

clients-node:  ## install the Node.js example's dependencies (npm ci, clients/node/package-lock.json)
	cd clients/node && npm ci --no-audit --no-fund

.PHONY: clients-cpp
clients-cpp:  ## build the C++ example (Debian's grpc++) into .cache/clients/cpp/ and run the tensor helper's self-check
	$(MAKE) -C clients/cpp -j2 --no-print-directory

.PHONY: clients-go
clients-go:  ## build the Go example (GOPATH mode, Debian's grpc-go) into .cache/clients/go/ and test the tensor helper
	bash clients/go/build.sh

# Java (clients/java): protoc + Debian's grpc-java plugin generate the stubs from protos/ into .cache/clients/java/gen
# (not committed), one javac call, a jar whose manifest Class-Path names the Debian jars below (no Maven).
# The jar sets were measured: the stubs and the example compile against JAVA_COMPILE_JARS; the example runs with
# JAVA_RUN_JARS and fails without any one of them. Packages: openjdk-17-jdk-headless (or default-jdk-headless),
# protobuf-compiler, protobuf-compiler-grpc-java-plugin, libgrpc-java, libprotobuf-java, libguava-java,
# libperfmark-java, libgeronimo-annotation-1.3-spec-java, libnetty-java. JAVA_LIBS=DIR takes the jars from DIR.
JAVA_LIBS ?= /usr/share/java
GRPC_JAVA_PLUGIN ?= /usr/bin/grpc_java_plugin
JAVA_OUT := .cache/clients/java
JAVA_PROTOS := $(PROTOS) protos/grpc/health/v1/health.proto
JAVA_COMPILE_JARS := protobuf grpc-api grpc-context grpc-stub grpc-protobuf guava geronimo-annotation-1.3-spec
JAVA_RUN_JARS := protobuf grpc-api grpc-context grpc-stub grpc-protobuf grpc-protobuf-lite guava grpc-core perfmark-api \
  grpc-netty netty-common netty-buffer netty-transport netty-resolver netty-codec netty-codec-http netty-codec-http2 netty-handler
JAVA_MISSING := for t in java javac jar protoc $(GRPC_JAVA_PLUGIN); do command -v $$t >/dev/null || echo $$t; done; \
  for j in $(sort $(JAVA_COMPILE_JARS) $(JAVA_RUN_JARS)); do [ -f $(JAVA_LIBS)/$$j.jar ] || echo $(JAVA_LIBS)/$$j.jar; done

.PHONY: clients-java clients-java-missing FORCE
FORCE:
clients-java: $(JAVA_OUT)/inferd-example.jar  ## build the Java example into .cache/clients/java/ and run the tensor helper's self-check
	java -cp $< dev.inferd.client.Tensors

clients-java-missing:  ## list what the Java build lacks (tools, jars in JAVA_LIBS); nothing printed = ready
	@$(JAVA_MISSING)

# the jar's manifest names JAVA_LIBS: a different JAVA_LIBS rebuilds it
$(JAVA_OUT)/java-libs: FORCE
	@mkdir -p $(@D) && echo '$(abspath $(JAVA_LIBS))' | cmp -s - $@ || echo '$(abspath $(JAVA_LIBS))' > $@

$(JAVA_OUT)/inferd-example.jar: $(JAVA_PROTOS) $(shell find clients/java/src -name '*.java' 2>/dev/null) $(JAVA_OUT)/java-libs
	@missing="$$($(JAVA_MISSING))"; [ -z "$$missing" ] || { echo "Java client: cannot build, missing:" $$missing; exit 1; }
	rm -rf $(JAVA_OUT)/gen $(JAVA_OUT)/classes && mkdir -p $(JAVA_OUT)/gen $(JAVA_OUT)/classes
	protoc -I protos --plugin=protoc-gen-grpc-java=$(GRPC_JAVA_PLUGIN) --java_out=$(JAVA_OUT)/gen --grpc-java_out=$(JAVA_OUT)/gen $(JAVA_PROTOS)
	javac -nowarn -encoding UTF-8 --release 11 -d $(JAVA_OUT)/classes -cp $(subst $(eval) ,:,$(JAVA_COMPILE_JARS:%=$(JAVA_LIBS)/%.jar)) \
	  $$(find $(JAVA_OUT)/gen clients/java/src -name '*.java')
	set -- $(JAVA_RUN_JARS:%=$(abspath $(JAVA_LIBS))/%.jar); { echo "Main-Class: dev.inferd.example.Example"; \
	  echo "Class-Path: $$1"; shift; for j; do echo "  $$j"; done; } > $(JAVA_OUT)/manifest.txt
	jar --create --file $@ --manifest $(JAVA_OUT)/manifest.txt -C $(JAVA_OUT)/classes .

ci: lint typecheck proto-check proto-lint proto-breaking clients test  ## what .ci/run runs

bench: $(MODELS)/.built  ## run the benchmarks (installs h2load from Debian's nghttp2-client if missing), write bench/results/; PEERS=1 adds the peers
	@command -v h2load >/dev/null || { command -v apt-get >/dev/null && apt-get install -y -q nghttp2-client >/dev/null; } \
	  || { echo "bench needs h2load: install nghttp2-client"; exit 1; }
	$(PY) -m bench.run --repository $(MODELS) $(if $(PEERS),--peers)

.PHONY: bench-peers
bench-peers: $(MODELS)/.built  ## inferd vs Triton, KServe, MLServer (~15 min; venvs under .cache/peers/) -> bench/results/peers.md
	@command -v h2load >/dev/null || { command -v apt-get >/dev/null && apt-get install -y -q nghttp2-client >/dev/null; } \
	  || { echo "bench needs h2load: install nghttp2-client"; exit 1; }
	$(PY) -m bench.run --scenario peers

clean:
	rm -rf $(VENV) $(MODELS) .cache build dist
