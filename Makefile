# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv, install the package (editable, so twistd finds the
# plugin in twisted/plugins/) and make sure redis-server is installed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: all setup redis openssl test-tools test demo bench bench-hostile bench-blocked bench-repair bench-scaleout clean

all: setup

setup: $(VENV)/.installed redis

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

redis:
	@tools/ensure-redis-server

# The TLS tests make certificates with openssl (tools/make-test-certs).
openssl:
	@tools/ensure-openssl

# ip, nft and systemd-analyze for the multi-host and deployment tests (tools/ensure-test-tools)
test-tools:
	@tools/ensure-test-tools

test: setup openssl test-tools
	$(BIN)/python tools/run_tests.py tests

demo: setup
	$(BIN)/dynomite-cluster up etc/demo-cluster.yml --prometheus monitoring/prometheus/prometheus.yml

# Throughput against plain Redis in the same run (about 5 minutes; see README)
bench: setup
	$(BIN)/dynomite-bench

# A pipelined client alone and under a flood of hostile connections (opt-in, about 3 minutes)
bench-hostile: setup
	$(BIN)/dynomite-bench-hostile

bench-blocked: setup
	$(BIN)/dynomite-bench-blocked

# Anti-entropy repair of 1,000,000 keys (100,000 differing), and the client meanwhile (opt-in, 15-20 minutes)
bench-repair: setup
	$(BIN)/dynomite-bench-repair

# A node joins a rack of 200,000 keys while a client runs: keys/s copied, the client's throughput (opt-in, about 5 minutes)
bench-scaleout: setup
	$(BIN)/dynomite-bench-scaleout

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp* twisted/plugins/dropin.cache
