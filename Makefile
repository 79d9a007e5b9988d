# The two set-up commands (README): `make pipeline` and `make test`. Both create .venv when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
SHARED ?= ../shared
BIN := $(abspath $(VENV))/bin

# Telemetry off: DVC analytics, Prefect server analytics, MLflow telemetry.
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export PATH := $(BIN):$(PATH)

# Offline machines: data archive and ImageNet weights come from ../shared when it is there.
ifneq ($(wildcard $(SHARED)/mirror),)
export PIPELINE_DATA_MIRROR ?= $(abspath $(SHARED)/mirror)
endif
ifneq ($(wildcard $(SHARED)/keras_home/models),)
export KERAS_HOME ?= $(abspath .cache/keras_home)
endif

.PHONY: install pipeline test keras-home

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# Keras may write keras.json into KERAS_HOME, so it gets a writable copy of the shared weights.
keras-home:
	@if [ -n "$$KERAS_HOME" ] && [ -d "$(SHARED)/keras_home/models" ] && [ ! -d "$$KERAS_HOME/models" ]; then \
		mkdir -p "$$KERAS_HOME" && cp -r "$(SHARED)/keras_home/models" "$$KERAS_HOME/" && chmod -R u+w "$$KERAS_HOME"; fi

pipeline: install keras-home
	python -m pipeline.datasets  # params.yaml's dataset names, checked, into the list dvc.yaml loops over
	dvc repro
	python -m pipeline.summary

# The linter, the formatter's check and the type checker (pyproject's [tool.mypy]: pipeline/ and flows/) come
# first: a slip fails in seconds, not after the suite.
# The browser test drives Debian's chromium (never `playwright install`, which downloads its own).
test: install keras-home
	ruff check .
	ruff format --check .
	mypy
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	pytest
