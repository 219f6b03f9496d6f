# The project's interface: CI and the README call these same targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime
GEN_STAMP := gen/.generated
KAFKA_LIBS := deploy/kafka/target/libs
BUF := .tools/bin/buf
BUF_VERSION := v1.75.0
PROTOS := $(shell find proto -name '*.proto')
DEMO_MINUTES ?= 5
DEMO_SEED ?= 7

.PHONY: help setup setup-run run demo test test-unit lint format proto bench erlang-check chaos quarantine token kafka-jars kafka-up kafka-down topics acls clean

help:
	@echo "make run    set up what is missing, start the Kafka broker and the services"
	@echo "make demo   the services plus the call-center simulator, with a live wallboard (DEMO_MINUTES=5)"
	@echo "make test   set up what is missing, then run every test suite (the broker starts itself)"
	@echo "make lint   ruff, buf lint and buf breaking against main"
	@echo "make bench  event store and contact-flow benchmarks against raw confluent-kafka, on the local broker"
	@echo "make erlang-check  an M/M/c queue through the services: measured SL and ASA against Erlang C"
	@echo "make chaos  the fault suite: broker and service kills, lag, poison, bad input; facts lost/doubled/misrecorded"
	@echo "make quarantine SERVICE=intake [ARGS='skip TOPIC PARTITION OFFSET --by NAME']  records a service could not apply"
	@echo "make token ROLE=agent SUBJECT=a-17 [TOKEN_ARGS='--hours 1']  a local bearer token (docs/security.md)"
	@echo "other: setup proto kafka-jars kafka-up kafka-down topics acls format clean"

# What running needs (make run): the services' packages, generated code and the broker's jars.
# setup adds the test and lint tools (pytest and friends, buf).
setup-run: $(RUNTIME) $(GEN_STAMP) $(KAFKA_LIBS)/.complete
setup: setup-run $(INSTALLED) $(BUF)

$(RUNTIME): pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[proto]'
	echo "$(CURDIR)/gen" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/callcenter-gen.pth"
	touch $@

$(INSTALLED): $(RUNTIME) pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

proto: $(GEN_STAMP)
$(GEN_STAMP): $(RUNTIME) $(PROTOS)
	PYTHON=$(PY) bash deploy/scripts/proto.sh
	touch $@

kafka-jars: $(KAFKA_LIBS)/.complete
$(KAFKA_LIBS)/.complete: deploy/kafka/pom.xml
	rm -rf $(KAFKA_LIBS)
	cd deploy/kafka && mvn -q -B -Dstyle.color=never package
	touch $@

$(BUF):
	GOBIN=$(CURDIR)/.tools/bin GOFLAGS=-mod=mod go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

# The broker secured (CC_BROKER__SECURITY=plaintext runs it open): the local CA and the admin's SCRAM
# password with the storage, then the topics, then the other principals' users and ACLs.
kafka-up: setup-run
	$(PY) -m services.platform.broker up
	$(PY) -m services.platform.topics ensure
	$(PY) -m services.platform.acls ensure

kafka-down:
	test ! -x $(PY) || $(PY) -m services.platform.broker down

topics: setup-run
	$(PY) -m services.platform.topics ensure

acls: setup-run
	$(PY) -m services.platform.acls ensure

run: kafka-up
	$(PY) -m services.launcher

demo: kafka-up
	$(PY) load-tests/simulate.py --start-services --minutes $(DEMO_MINUTES) --seed $(DEMO_SEED)

bench: kafka-up
	PYTHONPATH=$(CURDIR) $(PY) load-tests/bench_event_store.py --events 4000 --batch 1 --batch 10 --threads 1 --threads 16
	$(PY) load-tests/bench_contact_flow.py --rate 20 --rate 40 --rate 60 --rate 80 --seconds 30
	PYTHONPATH=$(CURDIR) $(PY) load-tests/bench_kpi_runtime.py --events 20000
	PYTHONPATH=$(CURDIR) $(PY) load-tests/bench_kpi_pipeline.py --rate 50 --rate 200 --rate 400 --rate 600 --seconds 20
	$(PY) load-tests/bench_tickets.py --events 1000000
	$(PY) load-tests/bench_approvals.py --requests 300

erlang-check: setup kafka-up
	$(PY) load-tests/check_erlang_c.py --start-services --minutes 15

# The fault suite runs a system of its own (broker, ClickHouse stand-in, services) under .data/chaos.
chaos: setup
	$(PY) load-tests/chaos.py $(CHAOS_ARGS)

SERVICE ?= intake
ARGS ?= list
quarantine: setup-run
	$(PY) -m services.platform.quarantine --service $(SERVICE) $(ARGS)

ROLE ?= supervisor
SUBJECT ?=
TOKEN_ARGS ?=
token: setup-run
	@$(PY) -m services.platform.identity token --role $(ROLE) $(if $(SUBJECT),--subject $(SUBJECT)) $(TOKEN_ARGS)

test: setup
	$(PY) -m pytest

test-unit: setup
	$(PY) -m pytest tests/unit tests/contract -m "not kafka"

lint: setup
	$(PY) -m ruff check --no-cache services tests load-tests
	$(PY) -m ruff format --no-cache --check services tests load-tests
	BUF=$(BUF) bash deploy/scripts/buf.sh lint
	BUF=$(BUF) bash deploy/scripts/buf.sh breaking

format: setup
	$(PY) -m ruff format services tests load-tests
	$(PY) -m ruff check --fix services tests load-tests

clean: kafka-down
	rm -rf gen .data deploy/kafka/target
