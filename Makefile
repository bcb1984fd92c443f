# zmqflow: one entry point for people and CI.
# Stack targets delegate to scripts/ so that the logic stays readable shell.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
N ?= 2

.PHONY: help system-deps venv up keys client-key rotate-forwarder-key down ps logs scale images test test-rust test-fast test-integration test-prefect test-airflow lint chaos soak bench bench-core bench-prefect bench-prefect-runner bench-airflow bench-airflow-executor clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# No apt for the venv: pyzmq's wheels bundle libzmq. Only a Python without
# venv support (Debian's python3.x-venv) sends us to system-deps.
$(BIN)/zmqflow: pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || PYTHON=$(PYTHON) bash scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -e '.[test,integration,bench]'
	@touch $@

system-deps: ## Debian packages the Rust worker's build needs (libzmq3-dev, pkg-config, cc): apt-get when missing
	PYTHON=$(PYTHON) bash scripts/system-deps.sh

venv: $(BIN)/zmqflow ## create .venv with zmqflow and the test tools (no apt)

images: ## build every image we run (no registry needed)
	bash scripts/build-images.sh

up: venv ## build what is missing, start the stack, wait until healthy (PROFILE=monitoring: Prometheus too)
	$(if $(PROFILE),COMPOSE_PROFILES=$(PROFILE) ,)bash scripts/stack-up.sh

keys: ## the stack's CURVE keys, once, into its key volumes (make up does it too); lists the public keys
	bash scripts/compose.sh run --rm --no-deps keys

client-key: venv ## a client key for a program on the host, let in without restarts: make client-key NAME=myapp [DIR=...] [GRANTS="submit=airflow.> ..."]
	GRANTS='$(GRANTS)' bash scripts/client-key.sh $(if $(NAME),$(NAME),$(error NAME=... is required)) $(DIR)

rotate-forwarder-key: venv ## a new forwarder key pair, taken by every service and DIR's host keys (restarts them; the journal keeps every task)
	bash scripts/rotate-forwarder-key.sh $(DIR)

down: ## stop the stack (volumes kept; `make down V=1` drops them)
	bash scripts/stack-down.sh $(if $(V),--volumes,)

ps: ## what runs, and its health
	bash scripts/compose.sh ps

logs: ## follow the stack's logs
	bash scripts/compose.sh logs -f --tail=100

scale: ## scale workers and wait until healthy: make scale N=4 [RUST=2]
	bash scripts/compose.sh up -d --no-recreate --wait --scale worker-python=$(N) $(if $(RUST),--scale worker-rust=$(RUST),)

lint: venv ## ruff
	$(BIN)/ruff check src tests integration_tests scripts orchestrators
	$(BIN)/ruff format --check src tests integration_tests scripts orchestrators

# The tests that build and run the Rust worker need its system packages: they
# run in test-rust, so that test-fast needs no apt.
RUST_WORKER_TESTS := $(sort $(wildcard tests/test_rust_worker*.py))

test-fast: venv ## fast tests: no Docker, real processes on loopback (the Rust worker's: test-rust)
	$(BIN)/pytest -q tests orchestrators/airflow/tests $(addprefix --ignore=,$(RUST_WORKER_TESTS))

test-rust: venv ## the Rust worker: protocol and service vectors, unit tests, clippy, its tests in tests/
	PYTHON=$(PYTHON) NEED_CARGO=1 bash scripts/system-deps.sh
	cd services/worker-rust && cargo test --locked --quiet && cargo clippy --locked --quiet --all-targets -- -D warnings
	$(BIN)/pytest -q $(RUST_WORKER_TESTS)

test-integration: venv ## integration tests against the running stack (testcontainers)
	bash scripts/run-integration-tests.sh

test-prefect: ## the Prefect package's fast tests, in .venv-prefect (Prefect apart from Airflow, as in the images)
	PYTHON=$(PYTHON) bash scripts/prefect-venv.sh
	.venv-prefect/bin/pytest -q -p no:cacheprovider orchestrators/prefect/tests

test-airflow: ## the Airflow provider's tests that need Airflow (ZmqflowExecutor, worker handler), in .venv-airflow
	PYTHON=$(PYTHON) bash scripts/airflow-venv.sh
	.venv-airflow/bin/pytest -q -p no:cacheprovider orchestrators/airflow/tests/test_executor_airflow.py

test: test-rust test-fast test-integration test-prefect test-airflow ## everything CI runs

chaos: venv ## kill, freeze, cut off and scale peers under load; a table per scenario
	bash scripts/chaos.sh

soak: venv ## the chaos suite, longer (SOAK_MINUTES=10 by default)
	bash scripts/chaos.sh --soak

bench: venv system-deps ## zmqflow vs raw ZeroMQ, Celery, NATS, JetStream: one run, table, plot (ARGS=--quick)
	$(BIN)/python scripts/bench.py $(ARGS)

bench-core: venv system-deps ## forwarder round trips vs raw pyzmq echo, same run
	$(BIN)/python scripts/bench_core.py

bench-prefect: venv ## 10,000 items: fabric from one Prefect flow vs 10,000 .map tasks (needs `make up`)
	$(BIN)/python scripts/bench_prefect.py

bench-prefect-runner: ## 1,000 tasks: ThreadPool vs DaskTaskRunner vs ZmqflowTaskRunner, same slots (needs `make up`)
	PYTHON=$(PYTHON) BENCH=1 bash scripts/prefect-venv.sh
	.venv-prefect/bin/python scripts/bench_prefect_runner.py

bench-airflow: venv ## 10,000 items: deferrable operator vs dynamic task mapping (needs `make up`; ARGS=--mapped 1024)
	$(BIN)/python scripts/bench_airflow.py $(ARGS)

bench-airflow-executor: venv ## LocalExecutor vs CeleryExecutor (Redis) vs ZmqflowExecutor, 200 mapped tasks, one stack of its own (ARGS=--rounds 2)
	$(BIN)/python scripts/bench_airflow_executor.py $(ARGS)

clean:
	rm -rf $(VENV) .venv-prefect .venv-airflow .pytest_cache .ruff_cache
