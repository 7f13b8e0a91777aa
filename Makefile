# The two commands of the README: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint typecheck unit clean

$(BIN)/.installed: setup.cfg pyproject.toml examples/wxgate-plugin-example/setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,embedded,motor]'
	# the example third-party plugin: its tests run with the suite, found by entry points only
	$(BIN)/pip install --quiet -e ./examples/wxgate-plugin-example
	touch $@

install: $(BIN)/.installed

run: $(BIN)/.installed
	$(BIN)/python run.py serve

test: lint typecheck unit

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# plugins/ installs as wxgate_plugins; mypy needs to see it under that name.
typecheck: $(BIN)/.installed
	mkdir -p .typecheck && ln -sfn ../plugins .typecheck/wxgate_plugins
	MYPYPATH=.typecheck $(BIN)/mypy gateway .typecheck/wxgate_plugins tests run.py bench \
		examples/wxgate-plugin-example/wxgate_blocklist examples/wxgate-plugin-example/tests

unit: $(BIN)/.installed
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .typecheck .mypy_cache .ruff_cache .pytest_cache *.egg-info
