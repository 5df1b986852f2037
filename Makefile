# Swarm: one-command run, test and benchmark. `make help` lists the targets.

SHELL := /bin/bash
CARGO ?= cargo
PG_URL ?= postgres://postgres@127.0.0.1:5432/test
PG_ADMIN_URL ?= postgres://postgres@127.0.0.1:5432/postgres
BENCH_PG_URL ?= postgres://postgres@127.0.0.1:5432/swarm_bench
FUZZ_PG_URL ?= postgres://postgres@127.0.0.1:5432/swarm_fuzz
BENCH_SECONDS ?= 5
BENCH_CONCURRENCY ?= 32
HTTP_SECONDS ?= 10
HTTP_CONNECTIONS ?= 64
HELD_SECONDS ?= 10
# Every benchmark builds the same packages, so cargo unifies their features once and the release
# binaries are built once (building `swarm` alone would rebuild its dependencies, for minutes).
BENCH_BUILD = $(CARGO) build --release -p swarm -p swarm-bench
FUZZ_EXAMPLES ?= 100
PY_VENV ?= target/py-venv

.PHONY: help run test e2e bench bench-chaos bench-flow bench-held bench-python bench-scale fuzz openapi python ui ui-deps screenshots lint fmt toolchain tools

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

toolchain: ## check that the Rust toolchain and its components are present
	@command -v $(CARGO) >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs"; exit 1; }
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

tools: ## install what the tests, checks and benchmarks use besides Rust: promtool, kubectl, Chromium and wrk (Debian's prometheus, kubernetes-client, chromium and wrk packages)
	@for need in promtool:prometheus kubectl:kubernetes-client chromium:chromium wrk:wrk; do \
		command -v $${need%%:*} >/dev/null && continue; \
		echo "installing $${need%%:*} (Debian package $${need##*:})"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y --no-install-recommends $${need##*:} >/dev/null || \
		{ $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y --no-install-recommends $${need##*:} >/dev/null; } || exit 1; \
	done

run: toolchain ui ## build and start every service and the gateway (http://127.0.0.1:8080, the dashboard at /ui/)
	$(CARGO) run --release -p swarm -- up

test: toolchain tools python ui ## run unit, integration (SQLite and PostgreSQL) and end-to-end tests, the Python SDK's against a real stack, and the dashboard's in headless Chromium
	@pg_isready -q -d "$(PG_URL)" 2>/dev/null || echo "warning: PostgreSQL at $(PG_URL) does not answer; its tests will fail (set SWARM_TEST_POSTGRES_URL)"
	SWARM_TEST_POSTGRES_URL=$${SWARM_TEST_POSTGRES_URL:-$(PG_URL)} $(CARGO) test --workspace --all-targets
	$(CARGO) build -p swarm
	SWARM_TEST_POSTGRES_URL=$${SWARM_TEST_POSTGRES_URL:-$(PG_URL)} SWARM_BIN=$(CURDIR)/target/debug/swarm $(PY_VENV)/bin/pytest -q sdk/python/tests
	cd ui && SWARM_BIN=$(CURDIR)/target/debug/swarm npm test

ui-deps: ## install the dashboard's npm packages (from package-lock.json)
	@test -d ui/node_modules || (cd ui && npm ci --no-audit --no-fund)

ui: ui-deps ## build the dashboard into ui/dist, which the gateway embeds (build the binary after it)
	cd ui && npm run build

screenshots: ui tools ## capture every dashboard view at 1280x800 and 390x844 into docs/screenshots
	$(CARGO) build -p swarm
	cd ui && SWARM_BIN=$(CURDIR)/target/debug/swarm SCREENSHOTS=$(CURDIR)/docs/screenshots npx playwright test screenshots

python: ## install the Python SDK and its tools into target/py-venv
	@test -x $(PY_VENV)/bin/pytest || (python3 -m venv $(PY_VENV) && $(PY_VENV)/bin/pip install --quiet --upgrade pip)
	$(PY_VENV)/bin/pip install --quiet -e 'sdk/python[dev]'

e2e: toolchain tools ## run only the end-to-end tests
	SWARM_TEST_POSTGRES_URL=$${SWARM_TEST_POSTGRES_URL:-$(PG_URL)} $(CARGO) test -p swarm-e2e

bench: toolchain tools ## measure the API as users' clients do (wrk against swarm up), the queue cycle, the cache, what observability costs, and held load
	$(BENCH_BUILD)
	@mkdir -p data && rm -f data/bench.db data/bench.db-wal data/bench.db-shm
	./target/release/swarm-bench http --database-url sqlite://data/bench.db --seconds $(HTTP_SECONDS) --connections $(HTTP_CONNECTIONS)
	psql -q "$(PG_ADMIN_URL)" -c 'DROP DATABASE IF EXISTS swarm_bench' -c 'CREATE DATABASE swarm_bench'
	./target/release/swarm-bench http --database-url $(BENCH_PG_URL) --seconds $(HTTP_SECONDS) --connections $(HTTP_CONNECTIONS)
	@rm -f data/bench.db data/bench.db-wal data/bench.db-shm
	./target/release/swarm-bench api --database-url sqlite://data/bench.db --seconds $(BENCH_SECONDS) --concurrency $(BENCH_CONCURRENCY)
	psql -q "$(PG_ADMIN_URL)" -c 'DROP DATABASE IF EXISTS swarm_bench' -c 'CREATE DATABASE swarm_bench'
	./target/release/swarm-bench api --database-url $(BENCH_PG_URL) --seconds $(BENCH_SECONDS) --concurrency $(BENCH_CONCURRENCY)
	./target/release/swarm-bench cache --seconds $(BENCH_SECONDS) --concurrency $(BENCH_CONCURRENCY)
	./target/release/swarm-bench overhead --seconds $(BENCH_SECONDS) --concurrency $(BENCH_CONCURRENCY)
	$(MAKE) --no-print-directory bench-flow
	$(MAKE) --no-print-directory bench-chaos
	$(MAKE) --no-print-directory bench-held
	$(MAKE) --no-print-directory bench-python

bench-chaos: ## kill -9 swarm up three times under load (PostgreSQL) and check that every acknowledged task completes once, with its own result
	$(BENCH_BUILD)
	@mkdir -p data/bench-logs
	psql -q "$(PG_ADMIN_URL)" -c 'DROP DATABASE IF EXISTS swarm_bench' -c 'CREATE DATABASE swarm_bench'
	./target/release/swarm-bench chaos --database-url $(BENCH_PG_URL)

bench-flow: ## batch creation throughput and the parent-completed to child-claimed latency, on SQLite and PostgreSQL
	$(BENCH_BUILD)
	@mkdir -p data && rm -f data/bench-flow.db data/bench-flow.db-wal data/bench-flow.db-shm
	./target/release/swarm-bench flow --database-url sqlite://data/bench-flow.db --seconds $(BENCH_SECONDS)
	psql -q "$(PG_ADMIN_URL)" -c 'DROP DATABASE IF EXISTS swarm_bench' -c 'CREATE DATABASE swarm_bench'
	./target/release/swarm-bench flow --database-url $(BENCH_PG_URL) --seconds $(BENCH_SECONDS)

bench-held: ## hold 2,000 event streams and 1,000 waiting claims while creating tasks, on SQLite and PostgreSQL
	$(BENCH_BUILD)
	@mkdir -p data && rm -f data/bench-held.db data/bench-held.db-wal data/bench-held.db-shm
	./target/release/swarm-bench held-load --database-url sqlite://data/bench-held.db --seconds $(HELD_SECONDS)
	psql -q "$(PG_ADMIN_URL)" -c 'DROP DATABASE IF EXISTS swarm_bench' -c 'CREATE DATABASE swarm_bench'
	./target/release/swarm-bench held-load --database-url $(BENCH_PG_URL) --seconds $(HELD_SECONDS)

bench-scale: ## create, claim and list latency against a backlog of 10^3 to 10^6 queued tasks on PostgreSQL (10^5 on SQLite), then memory with 10,000 heartbeating agents; not part of make bench
	$(BENCH_BUILD)
	@mkdir -p data/bench-logs && rm -f data/bench-scale.db data/bench-scale.db-wal data/bench-scale.db-shm
	./target/release/swarm-bench scale --database-url sqlite://data/bench-scale.db --sizes 1000,10000,100000
	psql -q "$(PG_ADMIN_URL)" -c 'DROP DATABASE IF EXISTS swarm_bench' -c 'CREATE DATABASE swarm_bench'
	./target/release/swarm-bench scale --database-url $(BENCH_PG_URL) --sizes 1000,10000,100000,1000000

bench-python: toolchain python ## one Python SDK worker process (64 slots) draining 20,000 no-op tasks through the gateway on PostgreSQL
	$(BENCH_BUILD)
	psql -q "$(PG_ADMIN_URL)" -c 'DROP DATABASE IF EXISTS swarm_bench' -c 'CREATE DATABASE swarm_bench'
	$(PY_VENV)/bin/python sdk/python/bench/worker_bench.py target/release/swarm $(BENCH_PG_URL)

fuzz: toolchain ## fuzz the REST API against its OpenAPI document on SQLite and PostgreSQL (schemathesis, FUZZ_EXAMPLES per operation)
	$(CARGO) build -p swarm
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) tests/fuzz/run.sh
	psql -q "$(PG_ADMIN_URL)" -c 'DROP DATABASE IF EXISTS swarm_fuzz' -c 'CREATE DATABASE swarm_fuzz'
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_DATABASE_URL=$(FUZZ_PG_URL) tests/fuzz/run.sh

openapi: toolchain ## write docs/openapi.json, the OpenAPI document the gateway serves (a test checks they agree)
	SWARM_BLESS_OPENAPI=1 $(CARGO) test -p swarm-gateway --lib openapi::tests::the_committed_document_is_the_served_one

lint: toolchain tools python ui-deps ## check formatting and clippy (warnings are errors), ruff and mypy on the Python SDK, tsc and eslint on the dashboard, and deploy/ (Kubernetes overlays, compose, alert rules and their tests, the Grafana dashboard)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd sdk/python && $(CURDIR)/$(PY_VENV)/bin/ruff check . && $(CURDIR)/$(PY_VENV)/bin/ruff format --check . && $(CURDIR)/$(PY_VENV)/bin/mypy src tests examples bench
	cd ui && npm run lint
	$(PY_VENV)/bin/pip install --quiet -r deploy/requirements.txt
	PY_VENV=$(CURDIR)/$(PY_VENV) deploy/check.sh

fmt: toolchain ## format the code
	$(CARGO) fmt --all
