# Two commands: `make run` starts the server on embedded defaults, `make test` runs the tests
# (on SoftHSM, then the HSM layer and an end-to-end flow on openCryptoki: `make test-opencryptoki`).
# Both install what they need and are quick the second time.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VENV_PY := $(VENV)/bin/python
STATE_DIR ?= var
PROTOS := $(wildcard proto/signserver/v1/*.proto)
GENERATED := $(patsubst proto/%.proto,%_pb2.py,$(PROTOS))

.PHONY: run test test-opencryptoki bench demo system-packages install proto clean

run: install
	./softhsm-setup/softhsm-setup "$(STATE_DIR)"
	SIGNSERVER_STATE_DIR="$(STATE_DIR)" $(VENV)/bin/signserver serve --demo

demo: install
	STATE_DIR="$(STATE_DIR)" ./examples/demo.sh

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-opencryptoki

# The HSM layer's tests and an end-to-end flow again, on openCryptoki's soft token (tests/conftest.py
# reads SIGNSERVER_TEST_TOKEN). opencryptoki-setup erases and initialises the system's soft token
# and starts its daemon pkcsslotd, so this needs root (as in CI).
test-opencryptoki: install
	SIGNSERVER_TEST_TOKEN=opencryptoki $(VENV)/bin/pytest tests/hsm tests/opencryptoki $(OCK_PYTEST_ARGS)

bench: install
	$(VENV_PY) -m benchmarks

install: system-packages $(VENV)/.installed proto

# Checks with dpkg-query each time (a few milliseconds); installs only what is missing.
system-packages:
	@./scripts/system-packages.sh

$(VENV_PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "signserver needs Python 3.11 or newer (found $$($(PYTHON) --version))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

proto: $(GENERATED)

# The generated package signserver/v1 mirrors the proto package signserver.v1;
# it is produced here and never committed.
signserver/v1/%_pb2.py: proto/signserver/v1/%.proto $(VENV)/.installed
	@mkdir -p signserver/v1
	$(VENV_PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $<
	@touch signserver/v1/__init__.py

clean:
	rm -rf $(VENV) signserver/v1 .pytest_cache
