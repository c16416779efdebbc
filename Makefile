# Anxin — two commands: `make demo` runs the whole platform, `make test` runs the tests.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint install clean browser broker cluster

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "需要 Python 3.11 / Python 3.11 is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP) broker
	$(BIN)/anxin demo

# The embedded MQTT broker is a real Mosquitto (Debian's, as our child on a free port) when the
# machine has one; installed when missing and we can (root + apt), else the amqtt fallback runs.
broker:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto (apt)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	  else echo "note: mosquitto not installed; the embedded broker falls back to amqtt (apt-get install mosquitto)"; fi; \
	fi

# The console's tests drive Debian's Chromium (a browser downloaded by a test tool cannot run
# here); CJK fonts so screenshots show Chinese. Installed when missing and we can (root + apt).
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi "noto.*cjk"; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and fonts-noto-cjk (apt)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; \
	  else echo "note: chromium not installed; browser tests will be skipped (CI installs it)"; fi; \
	fi

# The failover tests' database cluster (tests/reliability/test_failover.py, the doctor's): etcd,
# Patroni and PgBouncer, Debian's. Installed when missing and we can (root + apt).
cluster:
	@if ! command -v patroni >/dev/null 2>&1 || ! command -v etcd >/dev/null 2>&1 || ! command -v pgbouncer >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing patroni, etcd-server and pgbouncer (apt)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patroni etcd-server pgbouncer >/dev/null; \
	  else echo "note: patroni/etcd/pgbouncer not installed; the failover tests will be skipped (CI installs them)"; fi; \
	fi

test: lint browser broker cluster
	$(BIN)/pytest

# The whole gate before the tests: lint, format, types, and the architecture's import contracts
# (pyproject.toml [tool.importlinter], docs/architecture.md).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache
