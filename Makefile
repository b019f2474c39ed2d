# jailyard: `make site` provisions this machine as a jail host, `make test`
# runs the whole suite. Run as root on Debian 12. `make help` lists targets.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV     := .venv
BIN      := $(CURDIR)/$(VENV)/bin
PYTHON   := /usr/bin/python3
export PATH := $(BIN):$(PATH)
# No prompts and no self-update chatter anywhere.
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export DEBIAN_FRONTEND := noninteractive

# Debian packages. The roles install what a jail host needs on their own; these
# are what the controller (this machine) and the tests need before any role runs.
SITE_PACKAGES := python3 python3-venv
TEST_PACKAGES := $(SITE_PACKAGES) debootstrap busybox-static bubblewrap podman runc \
	systemd-container gcc make libc6-dev libcap-dev clang squashfs-tools erofs-utils cron \
	iptables util-linux git iproute2 nftables dpkg-dev strace

DEMO_CMD := jailrun demo -- sh -c 'id; hostname; cat /etc/debian_version'

.PHONY: print-test-packages root help site test lint ruff yamllint ansible-lint launcher-check pytest molecule bench \
	deps-site deps-test venv venv-dev clean

help: ## List the targets
	@echo "jailyard: make TARGET"
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'
	@echo "Variables: ANSIBLE_ARGS=... (make site), PYTEST_ARGS=..., MOLECULE_SCENARIO='default cron cluster', QUICK=1 (bench)"

site: root deps-site venv ## Provision this machine as a jail host (site.yml, inventory/local) and show a demo jail
	$(BIN)/ansible-playbook site.yml $(ANSIBLE_ARGS)
	@echo "# $(DEMO_CMD)"
	@rc=0; timeout -k 5 120 $(DEMO_CMD) || rc=$$?; \
	[ $$rc != 124 ] || echo "make site: jailrun exited 124: its mount step failed, or it hung for 120 s" >&2; \
	exit $$rc

# Every step runs even when an earlier one failed, so one CI run shows every
# failure; the summary names them and the exit status is non-zero.
TEST_STEPS := lint launcher-check pytest molecule
test: root deps-test venv-dev ## Run the whole suite: lint, C tests, pytest (unit, integration, launcher, image), molecule (default, cron, cluster)
	@failed=; for step in $(TEST_STEPS); do \
		start=$$SECONDS; echo "=== make $$step"; \
		if $(MAKE) --no-print-directory $$step; then result=ok; else result=FAILED; failed="$$failed $$step"; fi; \
		echo "=== make $$step: $$result in $$((SECONDS - start))s"; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed" >&2; exit 1; fi; \
	echo "make test: all passed"

lint: ruff yamllint ansible-lint ## ruff, yamllint, ansible-lint (production profile)

ruff: venv-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

yamllint: venv-dev
	$(BIN)/yamllint --strict .

ansible-lint: venv-dev
	$(BIN)/ansible-lint --offline

launcher-check: ## Build the launcher and run its C tests
	$(MAKE) -C launcher check

# Exit code 5 means pytest collected nothing: the suite was skipped or moved,
# which must fail loudly rather than pass as "no failures".
pytest: venv-dev ## Run pytest over tests/ (as root for the integration tests)
	@rc=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is missing" >&2; exit 1; fi; \
	exit $$rc

# default: a systemd node (the expiry timer); cron: a node whose PID 1 is not
# systemd and that has no cron until the role installs it (the cron path);
# cluster: three nodes over one shared tenants directory (docs/cluster.md).
# All three run in make test and so in CI.
MOLECULE_SCENARIO ?= default cron cluster
# Names the scenario's container after this checkout, so checkouts do not collide.
export JAILYARD_MOLECULE_ID := $(shell printf %s '$(CURDIR)' | md5sum | cut -c1-8)
# Every scenario runs even when an earlier one failed. Molecule's destroy step
# prints pages after a failed verify; the failing tests and their first error
# lines are repeated last, so the end of a CI log names them.
molecule: venv-dev ## Run the molecule scenarios (podman nodes from a local debootstrap image)
	@mkdir -p build
	@failed=; for scenario in $(MOLECULE_SCENARIO); do \
		echo "=== molecule test -s $$scenario"; \
		rc=0; $(BIN)/molecule test -s $$scenario 2>&1 | tee build/molecule-$$scenario.log || rc=$$?; \
		if [ $$rc != 0 ]; then failed="$$failed $$scenario"; fi; \
	done; \
	for scenario in $$failed; do \
		echo "=== molecule scenario $$scenario failed; what it reported:"; \
		sed 's/\x1b\[[0-9;]*m//g' build/molecule-$$scenario.log | grep -E ' FAILED|^.{0,12}(E  |fatal:|ERROR)|AssertionError' | tail -60; \
	done; \
	[ -z "$$failed" ] || { echo "molecule: FAILED:$$failed" >&2; exit 1; }

bench: venv-dev ## Run the benchmarks (bench/run; QUICK=1 for a smoke run)
	@if [ -x bench/run ]; then bench/run $(if $(QUICK),--quick); \
	else echo "bench/run is not there yet" >&2; exit 1; fi

# --- setup ------------------------------------------------------------------

root:
	@[ "$$(id -u)" = 0 ] || { echo "run as root: jail hosts, mounts and the setuid launcher need it" >&2; exit 1; }

# Install missing Debian packages only, so a re-run does not touch apt.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt-get install $$missing"; \
		apt-get update -qq && apt-get install -y -qq $$missing; \
	fi
endef

deps-site: ## Install the Debian packages `make site` needs (only missing ones)
	$(call apt_install,$(SITE_PACKAGES))

deps-test: ## Install the Debian packages `make test` needs (only missing ones)
	$(call apt_install,$(TEST_PACKAGES))

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.requirements.stamp: requirements.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.requirements-dev.stamp: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.requirements.stamp

print-test-packages:
	@echo $(TEST_PACKAGES)

venv: $(VENV)/.requirements.stamp ## Create .venv with the pinned requirements.txt

venv-dev: $(VENV)/.requirements-dev.stamp ## Create .venv with the pinned requirements-dev.txt

clean: ## Remove the venv and build outputs (not the installed jail host)
	rm -rf $(VENV) launcher/build .pytest_cache .ruff_cache
