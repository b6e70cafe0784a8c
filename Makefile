# trailmark: `make run` (install + run the embedded pipeline), `make test` (install + real Kafka + all tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
KAFKA_SH := deploy/kafka/kafka.sh
KAFKA_RUN_DIR ?= $(CURDIR)/.cache/kafka/run
export KAFKA_RUN_DIR

.PHONY: install native run test lint browser clients tracker tracker-deps kafka-up kafka-down bench bench-collector bench-enrich bench-pipeline bench-journeys clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=77'  # mypyc builds with the venv's setuptools, which must read pyproject's SPDX license
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# journey_builder/core.py compiled by mypyc (from the dev extras) into a C extension beside it, and the
# SHA-256 of the source it was built from: journey_builder/__init__.py uses the compiled module only
# while that matches core.py. No C compiler: the build is skipped (said once per change of core.py:
# the record then says `none`) and core.py runs as is.
NATIVE := journey_builder/core
NATIVE_SO := $(NATIVE).*.so $(NATIVE)__mypyc.*.so
RUST := trailmark/native
RUST_SRC := $(RUST)/Cargo.toml $(RUST)/Cargo.lock $(RUST)/src/lib.rs $(RUST)/src/blocks.rs $(RUST)/src/funnel.rs \
	$(RUST)/src/attribution.rs
native: $(NATIVE)_native.sha256 trailmark/_native.sha256

$(NATIVE)_native.sha256: $(NATIVE).py $(STAMP)
	@rm -f $(NATIVE_SO) $@
	@mkdir -p .cache
	@if $(BIN)/mypyc $(NATIVE).py >.cache/native.log 2>&1; then \
		sha256sum $(NATIVE).py | cut -d' ' -f1 >$@; echo "$(NATIVE).py compiled (mypyc)"; \
	else \
		rm -f $(NATIVE_SO); echo none >$@; \
		echo "$(NATIVE).py not compiled (no C compiler? see .cache/native.log): it runs as Python"; \
	fi

# trailmark/native (Rust: pyo3, serde_json) built by cargo into trailmark/_native.abi3.so: the Kafka journey
# builder's reader of enriched records and the funnel's level counter (trailmark/compiled.py), and the SHA-256 of
# its sources beside it (_native.sha256); compiled.py uses the module only while they match. No cargo, or a failed
# build: said once per change of the sources (the record then says `none`), the records are read by orjson and
# funnels counted by ClickHouse's windowFunnel.
trailmark/_native.sha256: $(RUST_SRC)
	@rm -f trailmark/_native.*.so $@
	@mkdir -p .cache
	@if command -v cargo >/dev/null 2>&1 && cargo build --release --locked --manifest-path $(RUST)/Cargo.toml \
			--target-dir .cache/cargo >.cache/native-rust.log 2>&1; then \
		cp .cache/cargo/release/lib_native.so trailmark/_native.abi3.so; \
		cat $(RUST_SRC) | sha256sum | cut -d' ' -f1 >$@; echo "$(RUST) compiled (cargo)"; \
	else \
		echo none >$@; echo "$(RUST) not compiled (no cargo? see .cache/native-rust.log): records are read by orjson"; \
	fi

run: install native
	$(BIN)/trailmark up

# Debian's chromium for the browser tests (Playwright drives /usr/bin/chromium; it never downloads one).
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The committed ingest/static/t.js is what the package serves; this rebuilds it from tracker_js/src.
tracker:
	npm ci --prefix tracker_js --no-audit --no-fund --silent
	node tracker_js/build.mjs

# The real Segment/RudderStack SDKs for tests/clients: the npm ones (pinned in tests/clients/package.json)
# and analytics-python 1.4 in its own venv (its pinned backoff 1.10 conflicts with rudder-sdk-python).
CLIENTS_PY14 := .cache/clients/py14
clients:
	npm ci --prefix tests/clients --no-audit --no-fund --silent
	@test -x $(CLIENTS_PY14)/bin/python || $(PY) -m venv $(CLIENTS_PY14)
	$(CLIENTS_PY14)/bin/pip install -q 'analytics-python==1.4.post1'

# esbuild for the check that the committed ingest/static/t.js is built from tracker_js/src
tracker-deps:
	npm ci --prefix tracker_js --no-audit --no-fund --silent

test: install native browser clients tracker-deps
	@trap '$(KAFKA_SH) stop >/dev/null 2>&1 || true' EXIT; \
	bash $(KAFKA_SH) start && \
	TRAILMARK_TEST_KAFKA_BOOTSTRAP=$$(cat $(KAFKA_RUN_DIR)/bootstrap) $(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

kafka-up:
	bash $(KAFKA_SH) start

kafka-down:
	bash $(KAFKA_SH) stop

# Benchmarks print their figures and append them to bench/RESULTS.md (never run by make test).
bench: bench-collector bench-enrich bench-pipeline bench-journeys

bench-collector: install
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python bench/collector.py

bench-enrich: install
	$(BIN)/python bench/enrich.py

bench-pipeline: install
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python bench/pipeline.py

bench-journeys: install
	$(BIN)/python bench/journeys.py

clean:
	rm -rf data .cache bench/out build $(NATIVE)_native.sha256 $(NATIVE_SO) trailmark/_native.sha256 trailmark/_native.*.so
