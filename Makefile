# Two commands: `make run` starts the server on embedded defaults, `make test` runs the tests
# (every test on SoftHSM with SQLite and, beside it, on PostgreSQL: `make test-postgresql`, and the
# HSM layer and an end-to-end flow on openCryptoki: `make test-opencryptoki`; then the timings
# tested alone: `make test-alone`).
# Both install what they need and are quick the second time.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VENV_PY := $(VENV)/bin/python
STATE_DIR ?= var
PROTOS := $(wildcard proto/signserver/v1/*.proto)
GENERATED := $(patsubst proto/%.proto,%_pb2.py,$(PROTOS))

# The tests run on PostgreSQL: all of them (make test-postgresql POSTGRESQL_TESTS=tests/store runs
# a part).
POSTGRESQL_TESTS ?= tests

.PHONY: run test test-postgresql test-alone test-opencryptoki cluster bench demo system-packages install proto clean

# Beside the core, and stopping with it: the RA with its demonstration (signserver ra serve --demo:
# pages at http://localhost:8450), the reference identity registry (127.0.0.1:8451, the RA's
# default) and a mail sink (127.0.0.1:$(DEMO_SMTP_PORT)) that prints every e-mail of the core and
# the RA and keeps it in $(STATE_DIR)/mail. The RA sends a renewal's notice as soon as it is
# confirmed (notice_days), so that the demo holder's fresh certificate can be renewed at once.
DEMO_SMTP_PORT ?= 8025
run: install
	./softhsm-setup/softhsm-setup "$(STATE_DIR)"
	export SIGNSERVER_STATE_DIR="$(STATE_DIR)" \
		SIGNSERVER_SMTP_HOST=127.0.0.1 SIGNSERVER_SMTP_PORT=$(DEMO_SMTP_PORT) SIGNSERVER_SMTP_SECURITY=none \
		SIGNSERVER_RA_SMTP_HOST=127.0.0.1 SIGNSERVER_RA_SMTP_PORT=$(DEMO_SMTP_PORT) SIGNSERVER_RA_NOTICE_DAYS=3650; \
	$(VENV_PY) -m aiosmtpd -n -l 127.0.0.1:$(DEMO_SMTP_PORT) -c signserver.ra.demo_mailbox.DemoMailbox \
		"$(STATE_DIR)/mail" & mail=$$!; \
	$(VENV)/bin/signserver ra registry-dev --listen 127.0.0.1:8451 --log-level WARNING & registry=$$!; \
	$(VENV)/bin/signserver ra serve --demo & ra=$$!; \
	trap 'kill $$ra $$registry $$mail 2>/dev/null' EXIT INT TERM; \
	$(VENV)/bin/signserver serve --demo

demo: install
	STATE_DIR="$(STATE_DIR)" ./examples/demo.sh

# Several nodes on one machine (README, "Several nodes"): PostgreSQL, two nodes on one SoftHSM
# token directory and nginx balancing them, all in $(STATE_DIR)/cluster, made anew each time.
# Prints the balancer's address; Ctrl-C stops everything.
cluster: install
	$(VENV_PY) scripts/cluster.py --folder "$(STATE_DIR)/cluster"

# pytest keeps each test module as rewritten for its assertions in __pycache__, unless
# PYTHONDONTWRITEBYTECODE is set: then every pytest process (four test processes, the openCryptoki
# run, the two runs alone) rewrites all of them again, about 11 s of CPU each. The tests' own
# bytecode is written whatever that says, as `make install` writes the package's; `make test`
# collects the suite once first, so that the processes it starts together find it written (the
# openCryptoki run, a small part of the suite, starts beside that collection, on the core it leaves
# idle; a failure to collect is reported by the runs).
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/pytest

# The PostgreSQL run and the openCryptoki one go beside the SQLite run (all wait on servers and
# child processes much of the time; openCryptoki's token is not the one the others use); their
# output, kept in out/test-postgresql.log and out/test-opencryptoki.log, is shown after the SQLite
# run's. The store runs are each spread over SQLITE_WORKERS / POSTGRESQL_WORKERS processes
# (pytest-xdist), a test file to a process so that a module's server or CA is made once; each
# process has its own token and temporary directory. 0 runs it in one process. The tests marked
# `alone` (timings that four test processes on two cores would spoil) run after all three, one
# store at a time.
SQLITE_WORKERS ?= 2
POSTGRESQL_WORKERS ?= 2
# A run still going after TEST_RUN_LIMIT (ALONE_RUN_LIMIT for the tests alone; GNU timeout's
# durations) is stuck: it is interrupted as Ctrl-C would (pytest then says which test each of its
# processes was in), killed a minute later if it has not ended, and said to have been stopped. The
# slowest whole `make test` met took 25 minutes; CI allows 90. (A test process killed outright, by
# the kernel's OOM killer say, ends its run at once, naming its test: tests/worker_reaper.py.)
TEST_RUN_LIMIT ?= 45m
ALONE_RUN_LIMIT ?= 10m
within = timeout --foreground --signal=INT --kill-after=60 $(1)
# $(call stopped,WHAT,LIMIT): after a command run $(call within,LIMIT), says whether it was stopped;
# leaves its status in $$status.
stopped = status=$$?; if [ $$status -eq 124 ] || [ $$status -eq 137 ]; then \
	echo "== make: $(1) did not end within $(2) and were stopped (TEST_RUN_LIMIT, ALONE_RUN_LIMIT) =="; fi
# The store runs share one folder of stamp fonts (SIGNSERVER_TEST_FONT_CACHE, tests/conftest.py's
# font_cache), removed when they end: each would otherwise cut the same subsets of the 16 MB face
# again, a process of about half a second of CPU each.
test: install
	@mkdir -p out; rm -f out/test-postgresql.status out/test-opencryptoki.status; \
	fonts=$$(mktemp -d); trap 'rm -rf "$$fonts"' EXIT; export SIGNSERVER_TEST_FONT_CACHE="$$fonts"; \
	( $(MAKE) --no-print-directory test-opencryptoki > out/test-opencryptoki.log 2>&1; \
	  echo $$? > out/test-opencryptoki.status ) & \
	$(PYTEST) --collect-only -q > /dev/null; \
	( $(MAKE) --no-print-directory test-postgresql > out/test-postgresql.log 2>&1; \
	  echo $$? > out/test-postgresql.status ) & \
	$(call within,$(TEST_RUN_LIMIT)) $(PYTEST) -n $(SQLITE_WORKERS) --dist loadfile -m "not alone" $(PYTEST_ARGS); \
	$(call stopped,the tests on SQLite,$(TEST_RUN_LIMIT)); sqlite=$$status; wait; \
	echo "== the tests on PostgreSQL (out/test-postgresql.log) =="; tail -n 40 out/test-postgresql.log; \
	echo "== the tests on openCryptoki (out/test-opencryptoki.log) =="; tail -n 15 out/test-opencryptoki.log; \
	[ $$sqlite -eq 0 ] && [ "$$(cat out/test-postgresql.status)" = 0 ] \
		&& [ "$$(cat out/test-opencryptoki.status)" = 0 ]
	@$(MAKE) --no-print-directory test-alone

# tests/conftest.py reads SIGNSERVER_TEST_STORE: it starts a throw-away PostgreSQL cluster for the
# run (as an unprivileged user when run as root) and removes it afterwards. Tests about SQLite
# itself (marked sqlite_only) ran in the SQLite run, as did those whose subject does not depend on
# the store (marked one_store: what Chromium shows of the RA's pages, listening sockets, the test
# runner, the files that use no store: about 220 s of this run's time; the HSM layer's files, 13 s
# of CPU in the SQLite run, joined them later). The fuzz tests (tests/fuzz)
# try half as many random inputs here (PG_FUZZ_SCALE): what they search is how the server parses a
# request or a document, the same on either store, and the SQLite run tries the full count.
PG_FUZZ_SCALE ?= 0.5
test-postgresql: install
	SIGNSERVER_TEST_STORE=postgresql FUZZ_SCALE=$(PG_FUZZ_SCALE) $(call within,$(TEST_RUN_LIMIT)) $(PYTEST) \
		-n $(POSTGRESQL_WORKERS) --dist loadfile -m "not sqlite_only and not one_store and not alone" $(POSTGRESQL_TESTS) $(PG_PYTEST_ARGS); \
		$(call stopped,the tests on PostgreSQL,$(TEST_RUN_LIMIT)); exit $$status

# The tests marked `alone`, on each store, with nothing else running (pytest's status 5: the
# arguments chose none of them). Only the files that mark some are collected: the whole suite's
# collection took longer than the tests themselves, with the cores otherwise idle.
ALONE_TESTS = $(shell grep -rlE --include='*.py' 'mark\.alone' tests)
test-alone: install
	$(call within,$(ALONE_RUN_LIMIT)) $(PYTEST) -m alone $(ALONE_TESTS) $(PYTEST_ARGS); \
		$(call stopped,the tests alone on SQLite,$(ALONE_RUN_LIMIT)); [ $$status -eq 0 ] || [ $$status -eq 5 ]
	SIGNSERVER_TEST_STORE=postgresql $(call within,$(ALONE_RUN_LIMIT)) $(PYTEST) -m "alone and not sqlite_only" \
		$(ALONE_TESTS) $(PG_PYTEST_ARGS); \
		$(call stopped,the tests alone on PostgreSQL,$(ALONE_RUN_LIMIT)); [ $$status -eq 0 ] || [ $$status -eq 5 ]

# The HSM layer's tests and an end-to-end flow again, on openCryptoki's soft token (tests/conftest.py
# reads SIGNSERVER_TEST_TOKEN). opencryptoki-setup erases and initialises the system's soft token
# and starts its daemon pkcsslotd, so this needs root (as in CI).
test-opencryptoki: install
	SIGNSERVER_TEST_TOKEN=opencryptoki $(call within,$(TEST_RUN_LIMIT)) $(PYTEST) tests/hsm tests/opencryptoki \
		$(OCK_PYTEST_ARGS); $(call stopped,the tests on openCryptoki,$(TEST_RUN_LIMIT)); exit $$status

bench: install
	$(VENV_PY) -m benchmarks

# The package's bytecode is compiled here: an environment with PYTHONDONTWRITEBYTECODE set never
# writes it, and every process (each CLI command, each server) would compile the package again,
# about 0.2 s of CPU each. compileall skips what is up to date.
install: system-packages $(VENV)/.installed proto
	@$(VENV_PY) -m compileall -q signserver

# Checks with dpkg-query each time (a few milliseconds); installs only what is missing.
system-packages:
	@./scripts/system-packages.sh

$(VENV_PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "signserver needs Python 3.11 or newer (found $$($(PYTHON) --version))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# The virtual environment's pip is the one its Python bundles (23.x on Debian 12's Python 3.11),
# which spends about 20 s of CPU more than a current one choosing among the files of the indexes'
# pages: `make install` in a fresh clone took 49 s with it, 32 to 38 s with this one (its own
# installation, first, takes 1.4 s).
# Twice quiet: it would pass on setuptools' notice about editable installs as a warning; errors
# (a failed download, conflicting requirements) are still shown.
PIP_VERSION := 26.3
$(VENV)/.installed: pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check 'pip==$(PIP_VERSION)'
	$(VENV_PY) -m pip install --quiet --quiet --disable-pip-version-check -e '.[dev]'
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
