# make demo: set up .venv if missing and run the main job; make test: set up and run the tests.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
ifneq ($(wildcard ../shared/data),)
export EDGESSM_DATA ?= $(abspath ../shared/data)
endif

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,onnx,tensorboard]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgessm demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build src/*.egg-info
