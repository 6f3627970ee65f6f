# Two commands do all the set-up on a fresh machine:
#   make demo   run the pipeline end to end on the embedded defaults (local Kafka + chdb)
#   make test   static checks (ruff, mypy: scripts/lint.sh), then the whole test suite (starts its
#               own broker on a test port)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test unit lint bench chaos fuzz install kafka-up kafka-down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
# (the filter drops the notice setuptools prints on every editable install)
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -e '.[test]'
	bash scripts/kafka.sh fetch
	bash scripts/prometheus-tools.sh
	bash scripts/web-tools.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cem demo

test: $(STAMP)
	BIN="$(abspath $(BIN))" bash scripts/lint.sh
	$(BIN)/python -m pytest tests --durations=15

lint: $(STAMP)
	BIN="$(abspath $(BIN))" bash scripts/lint.sh

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

bench: $(STAMP)
	$(BIN)/cem bench

chaos: $(STAMP)
	$(BIN)/cem chaos

fuzz: $(STAMP)
	CEM_FUZZ_SEED=0 CEM_FUZZ_RUNS=-1 CEM_FUZZ_SECONDS=$${CEM_FUZZ_SECONDS:-300} $(BIN)/python -m pytest tests/fuzz -q

kafka-up: $(STAMP)
	bash scripts/kafka.sh up

kafka-down:
	bash scripts/kafka.sh down

clean:
	rm -rf $(VENV) var .pytest_cache
