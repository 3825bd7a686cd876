# gadgetd: `make help` lists the targets. `make demo` and `make test` do all set-up themselves.
SHELL := /bin/bash
VENV ?= .venv
LAB_VENV := .venv-lab
PY := $(VENV)/bin/python
HIL := $(VENV)/bin/gadgetd-hil
KERNEL ?= debian:bookworm
# Has the regression: what depends on the verdict pins this kernel, not whatever bookworm is now.
REPRO_KERNEL := debian:6.1.0-57-amd64
# What that kernel does, scenario by scenario: it has the open-takes-the-mutex change and the
# ep0 read-loop fix (6.1.190), so no read(ep0) holds ffs->mutex while it waits.
REPRO_EXPECT := --expect present --expect-scenario contended_open=present \
	--expect-scenario deactivated_reopen=present --expect-scenario delayed_open=absent \
	--expect-scenario read_after_unbind=absent
# Over USB/IP, the scenarios whose host side crosses it (delayed_open and read_after_unbind
# play a function of their own and keep the host quiet: the topology changes nothing there).
USBIP_SCENARIOS := --scenario contended_open --scenario deactivated_set_alt --scenario open_race \
	--scenario deactivated_reopen
TEMPLATE ?= configfs_templates/loopback.toml
KERNEL_TAG = $(subst debian:,,$(KERNEL))
APT_PACKAGES := qemu-system-x86 busybox-static udev systemd libaio1 libusb-1.0-0 kmod file \
	python3-venv gcc libc6-dev linux-libc-dev pkg-config libusb-1.0-0-dev libaio-dev \
	linux-source-6.1 xz-utils patch openssh-server openssh-client strace usbip iproute2 \
	make bc bison flex libelf-dev libssl-dev ccache git iputils-ping umtp-responder mtp-tools sshfs
BUILD := out/bench-build
SYSUSERS := gadgetd/systemd/gadgetd.sysusers

.PHONY: help setup system-packages system-user demo repro repro-full bench bench-detection test unit-test vm-test \
	repro-test test-faults test-armel usbip-test usbip-repro test-two-machines test-lab test-kernel-tree test-composite bench-usbip lint

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

system-packages: ## Install the Debian packages the VM bench needs (root; no-op when present)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing Debian packages (install as root): $$missing"; exit 1; fi; \
	fi

# The function workers' default user; the VM tests run the host's root filesystem, so it must
# exist here. Not fatal for a non-root make: the unit tests do not need it.
system-user: system-packages ## Create the gadgetd system user the workers run as (root; no-op when present)
	@if ! getent passwd gadgetd >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then systemd-sysusers $(CURDIR)/$(SYSUSERS); \
	  else echo "no gadgetd user (the VM tests need it): run as root: systemd-sysusers $(CURDIR)/$(SYSUSERS)"; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	$(VENV)/bin/python -m compileall -q gadgetd  # the VM's root is read-only: no bytecode written there
	touch $@

# labgrid in a venv of its own: installed, its pytest plugin loads into every pytest run.
$(LAB_VENV)/.installed: pyproject.toml
	python3 -m venv $(LAB_VENV)
	$(LAB_VENV)/bin/pip install -q -e '.[dev,labgrid]'
	touch $@

setup: system-packages system-user $(VENV)/.installed ## Debian packages and the gadgetd user (as root), the venv, editable install
	@# bytecode of what changed since: the VM cannot write it, and compiles it at every start
	$(VENV)/bin/python -m compileall -q gadgetd bench

demo: setup ## Boot the default kernel in QEMU, serve the loopback gadget, enumerate it, loop data
	$(HIL) vm --kernel $(KERNEL) -- $(HIL) demo $(TEMPLATE)

repro: setup ## Quick kernel matrix: is the ep0 open() regression present? (bookworm, 6.1.0-50, sid)
	$(HIL) matrix --quick

repro-full: setup ## Default matrix: bookworm 6.1.0-50 .. newest, trixie's and sid's newest kernels
	$(HIL) matrix

bench-detection: setup ## Detection power of repro: 20 runs on a present and an absent kernel
	$(PY) bench/detection_power.py --runs 20

unit-test: setup ## Unit tests (no root, no VM), then the wheel installed into a fresh venv
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q -m wheel tests/test_wheel.py

$(BUILD)/testusb: bench/build.sh bench/host_bulk.c bench/ffs_aio_peer.c bench/aio_multibuff-reap.patch
	sh bench/build.sh $(BUILD)

bench: setup ## Throughput, control latency, bring-up, ep0 open cost, RSS vs in-kernel and C
	$(PY) bench/run.py --kernel $(KERNEL)

bench-usbip: setup ## The same bench over USB/IP in one kernel (usbip-vudc to vhci-hcd, loopback TCP)
	$(PY) bench/run.py --kernel $(KERNEL) --usb usbip-loopback --runs 3 --out out/bench-usbip

out/example-wheels/.built: $(wildcard examples/gadgetd-greeting/*.toml examples/gadgetd-greeting/*/*.py)
	rm -rf out/example-wheels
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w out/example-wheels examples/gadgetd-greeting
	rm -rf examples/gadgetd-greeting/build examples/gadgetd-greeting/*.egg-info
	touch $@

VM_FAULTS = tests/vm/test_faults.py tests/vm/test_hardening.py
# In test-faults only (make test's hour: on this machine with a cold 9p cache it took 3 minutes);
# the two-machine lab drives a board over SSH too.
VM_SLOW = tests/vm/test_ssh_board.py

vm-test: setup $(BUILD)/testusb out/example-wheels/.built ## VM: fault tests (1/10 counts), kernel and lifecycle tests, composites, systemd unit, HIL suite
	$(HIL) vm --kernel $(KERNEL) --speed high --results out/faults-$(KERNEL_TAG) -- \
	  $(PY) -m pytest -q --durations=8 -m vm $(VM_FAULTS)
	$(HIL) vm --kernel $(KERNEL) --speed high --results out/vm-$(KERNEL_TAG) -- sh -c \
	  '$(PY) -m pytest -q --durations=8 -m vm tests/vm $(VM_FAULTS:%=--ignore %) $(VM_SLOW:%=--ignore %) && $(HIL) local $(TEMPLATE) -q'
	$(HIL) vm --kernel $(KERNEL) --speed high --results out/composite -- \
	  $(PY) -m pytest -q -m "composite or mtp" -k "not pizero" tests/vm
	$(HIL) vm --kernel $(KERNEL) --systemd -- $(PY) -m pytest -q -m systemd tests/vm

test-faults: setup usbip-repro ## Fault suites at full counts (default and sid kernels), composites at super speed (HIL suite and the Pi Zero one included), MTP's 20 kills, HIL at full and super speed, repro over USB/IP
	$(HIL) vm --kernel $(KERNEL) --speed full -- $(HIL) local $(TEMPLATE) -q
	$(HIL) vm --kernel $(KERNEL) --speed super -- $(HIL) local $(TEMPLATE) -q
	$(HIL) vm --kernel $(KERNEL) --speed super --results out/composite-super -- \
	  $(PY) -m pytest -q -m composite tests/vm
	$(HIL) vm --kernel $(KERNEL) -- env GADGETD_FAULT_SCALE=1 $(PY) -m pytest -q -m mtp tests/vm
	$(HIL) vm --kernel $(KERNEL) -- $(PY) -m pytest -q -m vm $(VM_SLOW)
	$(MAKE) usbip-test USBIP_FULL=1
	for k in $(KERNEL) debian:sid; do \
	  $(HIL) vm --kernel $$k --timeout 14400 --results out/faults-full-$${k#debian:} -- \
	    env GADGETD_FAULT_SCALE=1 $(PY) -m pytest -q -m faults tests/vm || exit 1; \
	done

test-armel: setup ## Unit tests on 32-bit ARM (Pi Zero's armel) under qemu-user; root cached
	# test_fork_signals is about the kernel's signal delivery across fork; qemu-user emulates
	# signals (a 150-fork storm takes minutes there and proves nothing about the board).
	# The matrix chart is the host kit's (matplotlib), not the board's; so are kernel builds and
	# git bisects (patch, git and virtme-ng are not in the board's root). qemu-user has no
	# io_setup (ENOSYS): the AIO queue's test runs natively and on the board only.
	scripts/armel-tests.sh "" -q --deselect tests/test_fork_signals.py --deselect tests/test_aio.py \
	  --deselect tests/test_matrix.py::test_the_chart_is_written_with_every_scenario \
	  --ignore tests/test_build.py --ignore tests/test_treebisect.py \
	  --deselect tests/test_matrix_shards.py::test_merged_shards_equal_one_run_timings_aside \
	  --deselect tests/test_matrix_shards.py::test_a_kernel_in_two_shards_is_refused

repro-test: setup ## On the pinned regression kernel: gadgetd trace's tests, then repro, each scenario's verdict pinned
	$(HIL) vm --kernel $(REPRO_KERNEL) --results out/repro-test -- $(PY) -m pytest -q -m regression tests/vm
	$(HIL) matrix --kernels $(REPRO_KERNEL) --check $(REPRO_EXPECT) --out out/repro-test

usbip-test: setup ## USB/IP in one kernel (usbip-vudc to vhci-hcd, no dummy_hcd): re-attach tests; the HIL suite over it with USBIP_FULL=1 (test-faults)
	$(HIL) vm --kernel $(REPRO_KERNEL) --usb usbip-loopback --results out/usbip-test -- \
	  $(PY) -m pytest -q -m usbip $(if $(USBIP_FULL),,-k "not hil_suite") tests/vm

usbip-repro: setup ## USB/IP in one kernel: repro --host remote, 'gadgetd-hil drive' as the host (in test-faults)
	$(HIL) matrix --kernels $(REPRO_KERNEL) --usb usbip-loopback $(USBIP_SCENARIOS) --check \
	  --expect present --expect-scenario contended_open=present \
	  --expect-scenario deactivated_reopen=present --out out/usbip-test

test-lab: setup $(LAB_VENV)/.installed ## labgrid: the HIL suite and repro on a place in the two-machine lab; a matrix in two shards at once, merged (not CI)
	$(LAB_VENV)/bin/python -m pytest -q -s -m lab tests/lab/test_labgrid.py tests/lab/test_shards.py

test-two-machines: setup ## Board VM + host VM over USB/IP: HIL suite, reconnects, repro on 4 kernel pairs
	$(PY) -m pytest -q -m lab tests/lab/test_two_machines.py

test-composite: setup ## VM: the composite gadgets, MTP through umtprd, an exec program shielded from the regression
	$(HIL) vm --kernel $(KERNEL) --speed high --results out/composite -- \
	  $(PY) -m pytest -q -m "composite or mtp" tests/vm/test_composite.py tests/vm/test_exec.py
	$(HIL) vm --kernel $(REPRO_KERNEL) -- $(PY) -m pytest -q -m exec_shield tests/vm

test-kernel-tree: setup ## linux-source-6.1 built with each kernel-patches/ experiment, its verdicts, a git bisect (heavy)
	$(PY) -m pytest -q -m kernel_tree tests/kernel_tree

test: lint unit-test test-armel vm-test repro-test usbip-test ## Everything CI runs: lint, unit tests, then VM tests (dummy_hcd, USB/IP in one kernel)

lint: setup ## ruff, the import contract (lint-imports: layers, no cycles) and its own tests
	$(VENV)/bin/ruff check gadgetd tests bench examples
	cd $(CURDIR) && $(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -m lint tests/test_layers.py
