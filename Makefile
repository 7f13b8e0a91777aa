# The two commands of the README: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

CLIENT := clients/miniprogram

.PHONY: install run test lint typecheck unit client-test client-pack node deploy-deps clean

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

test: lint typecheck unit client-test

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# plugins/ installs as wxgate_plugins; mypy needs to see it under that name.
typecheck: $(BIN)/.installed
	mkdir -p .typecheck && ln -sfn ../plugins .typecheck/wxgate_plugins
	MYPYPATH=.typecheck $(BIN)/mypy gateway .typecheck/wxgate_plugins tests run.py bench \
		examples/wxgate-plugin-example/wxgate_blocklist examples/wxgate-plugin-example/tests

unit: $(BIN)/.installed deploy-deps console-deps
	$(BIN)/pytest $(PYTEST_ARGS)

# The console's page tests (tests/test_console.py) drive Debian's chromium with Playwright (from the
# test extra; it downloads no browser). As root, a machine without it gets the package; elsewhere
# those tests are skipped, with the apt-get line to run.
.PHONY: console-deps screenshots
console-deps:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else echo "tests/test_console.py needs chromium: apt-get install -y chromium" >&2; fi; }

# docs/console.png, the console as the README shows it: a served gateway after some traffic
screenshots: $(BIN)/.installed console-deps
	$(BIN)/python -m tests.console_harness docs/console.png

# The programs tests/test_deploy.py runs deploy/ with: nginx, promtool (Debian's prometheus),
# systemd-analyze (systemd) and ss (iproute2). As root, a machine without them gets Debian's
# packages; elsewhere those tests fail with the apt-get line to run.
DEPLOY_PROGRAMS := nginx:nginx promtool:prometheus systemd-analyze:systemd ss:iproute2
deploy-deps:
	@missing=""; for pair in $(DEPLOY_PROGRAMS); do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		else echo "tests/test_deploy.py needs:$$missing; install them: apt-get install -y$$missing" >&2; fi; fi

# The mini program's client library (TypeScript, built to CommonJS). Node and npm come from
# the machine; as root, a machine without them gets Debian's packages.
node:
	@command -v node >/dev/null && command -v npm >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nodejs npm; \
		else echo "the client library needs node (20+) and npm: install them (Debian: apt-get install nodejs npm)" >&2; exit 1; fi; }

# npm ci from the committed lock file, again whenever it changes
$(CLIENT)/node_modules/.installed: $(CLIENT)/package-lock.json | node
	cd $(CLIENT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# type-checks the sources, the tests and examples/miniprogram, then runs the tests
# (node --test) against real gateways they start from .venv
client-test: $(BIN)/.installed $(CLIENT)/node_modules/.installed
	cd $(CLIENT) && npm run --silent typecheck && npm test

# a release tarball: clients/miniprogram/wxgate-miniprogram-<version>.tgz
client-pack: $(CLIENT)/node_modules/.installed
	cd $(CLIENT) && npm run --silent build && npm pack --loglevel=error

# The multi-host fault drill in network namespaces (root and iproute2, a few minutes); see
# docs/scaling.md. `make unit` runs its short variant (tests/test_multihost.py).
.PHONY: multihost
multihost: $(BIN)/.installed deploy-deps
	$(BIN)/python bench/multihost.py

clean:
	rm -rf $(VENV) .typecheck .mypy_cache .ruff_cache .pytest_cache *.egg-info $(CLIENT)/node_modules $(CLIENT)/dist
