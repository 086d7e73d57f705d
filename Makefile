# Two commands matter: `make demo` and `make test` (see README.md).
# Both set up what they need first: system packages, a virtualenv, the package.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-stages lint format bench soak clean

# $(call timed,STAGE,COMMAND): runs COMMAND, prints `timing: STAGE Ns`, keeps its exit status.
timed = t=$$(date +%s); $(2); rc=$$?; echo "timing: $(1) $$(($$(date +%s) - t))s"; exit $$rc

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	$(BIN)/python -m agent_update.testing.demo

# Setup and lint, then three stages at once; the Frappe stages build or reuse a bench (docs/ci.md).
test:
	@t=$$(date +%s); $(MAKE) --no-print-directory test-stages; rc=$$?; \
	echo "timing: total $$(($$(date +%s) - t))s"; exit $$rc

test-stages:
	@$(call timed,setup,$(MAKE) --no-print-directory setup)
	@# lint, then pytest and both benches side by side (scripts/test-stages.sh, docs/ci.md)
	@VENV=$(VENV) bash scripts/test-stages.sh

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python benchmarks/run_all.py

# A fault soak on a loopback fleet (docs/soak.md): `make soak MINUTES=60 SEED=1234 HOSTS=40`;
# DESK=1 opens the desk's door too (the bench `make test` cached; DESK=/path/to/bench: that one).
MINUTES ?= 20
HOSTS   ?= 40
SEED    ?=
DESK    ?=
soak: setup
	$(BIN)/python -m agent_update.testing.soak --minutes $(MINUTES) --hosts $(HOSTS) \
	  $(if $(SEED),--seed $(SEED)) $(if $(filter 1,$(DESK)),--desk,$(if $(DESK),--desk $(DESK)))

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
