# Skiff: the two commands a new user needs are `make demo` and `make test`.
# Both install what they need first (Debian packages as root, then a venv).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
B ?=

# Debian packages the appliances and the test suite run for real.
DEB_PACKAGES := nftables dnsmasq-base dnsmasq-utils haproxy strongswan-charon \
	strongswan-swanctl libcharon-extra-plugins keepalived conntrack conntrackd iproute2 busybox \
	curl openssl procps psmisc python3-venv postgresql openssh-server util-linux \
	xvfb x11vnc x11-xserver-utils chromium dosfstools mtools qemu-utils xorriso python3-psycopg2 python3-cryptography
# One command from each package that must be present (checked before apt runs).
DEB_COMMANDS := nft dnsmasq dhcp_release haproxy swanctl keepalived conntrack conntrackd ip busybox curl openssl pkill \
	/usr/lib/postgresql/*/bin/initdb sshd ssh-keygen nsenter Xvfb x11vnc xsetroot chromium mkfs.vfat mcopy \
	qemu-img xorriso /usr/lib/python3/dist-packages/psycopg2/__init__.py \
	/usr/lib/python3/dist-packages/cryptography/__init__.py
# What building the system-VM image needs on top (make image, the image tests).
IMAGE_DEB_PACKAGES := mmdebstrap qemu-utils syslinux syslinux-common mtools dosfstools fdisk zstd e2fsprogs \
	qemu-system-x86
IMAGE_COMMANDS := mmdebstrap qemu-img syslinux /usr/lib/syslinux/mbr/mbr.bin mcopy mkfs.vfat sfdisk zstd mkfs.ext4 \
	qemu-system-x86_64

# noVNC for the console proxy, from the npm registry at build time (pinned with its
# integrity in appliances/console/npm/package-lock.json), never fetched at run time.
NOVNC_VERSION := 1.7.0
NOVNC_NPM := appliances/console/npm
NOVNC_DIR := appliances/console/static/novnc

.PHONY: help deps image-deps novnc venv lint test test-fast bench demo demo-down demo-router docs image clean

help:
	@echo "make demo        management server + a zone on this machine: network, instances, rules (Ctrl-C ends)"
	@echo "make demo-down   stop a running demo and remove everything it made"
	@echo "make demo-router the virtual router alone: a lab, NAT/forwarding shown, torn down"
	@echo "make test        install what the suite needs and run all of it (needs root)"
	@echo "make test-fast   unit, golden and property tests only (no namespaces)"
	@echo "make bench       run every benchmark; make bench B=vr_apply runs one"
	@echo "make docs        API documentation, a page per command, in docs/api/"
	@echo "make image       the system-VM image: build/out/ (rootfs .tar.zst, qcow2, manifest)"
	@echo "make lint        ruff"
	@echo "make novnc       vendor noVNC for the console proxy (npm)"
	@echo "make clean       remove the venv and caches"

deps:
	@$(MAKE) --no-print-directory _apt PKGS="$(DEB_PACKAGES)" CMDS="$(DEB_COMMANDS)"

image-deps:
	@$(MAKE) --no-print-directory _apt PKGS="$(IMAGE_DEB_PACKAGES)" CMDS="$(IMAGE_COMMANDS)"

# Installs PKGS unless every command (or file) in CMDS is already there.
_apt:
	@missing=""; for c in $(CMDS); do command -v $$c >/dev/null 2>&1 || \
		[ -x /usr/sbin/$$c ] || [ -f "$$c" ] || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing:$$missing; run make as root to install them" >&2; exit 1; fi; \
		echo "==> installing Debian packages (missing:$$missing)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		if [ ! -x /usr/sbin/sshd ]; then mkdir -p /etc/ssh && touch /etc/ssh/sshd_not_to_be_run; fi; \
		policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then policy=/usr/sbin/policy-rc.d; \
			printf '#!/bin/sh\nexit 101\n' > $$policy && chmod 755 $$policy; fi; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(PKGS) >/dev/null; \
		rc=$$?; [ -z "$$policy" ] || rm -f $$policy; [ $$rc = 0 ] || exit $$rc; \
	fi

$(NOVNC_DIR)/.installed-$(NOVNC_VERSION): $(NOVNC_NPM)/package-lock.json
	@if ! command -v npm >/dev/null 2>&1; then \
		if [ "$$(id -u)" != 0 ]; then echo "npm is missing; run make as root to install it" >&2; exit 1; fi; \
		echo "==> installing npm (Debian)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null \
			|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends npm >/dev/null; } || exit 1; \
	fi
	@echo "==> vendoring noVNC $(NOVNC_VERSION) from the npm registry into $(NOVNC_DIR)"
	@npm ci --prefix $(NOVNC_NPM) --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
	@grep -q '"version": "$(NOVNC_VERSION)"' $(NOVNC_NPM)/node_modules/@novnc/novnc/package.json \
		|| { echo "the lock file does not pin noVNC $(NOVNC_VERSION)" >&2; exit 1; }
	@rm -rf $(NOVNC_DIR) && mkdir -p $(NOVNC_DIR)
	@cp -r $(NOVNC_NPM)/node_modules/@novnc/novnc/. $(NOVNC_DIR)/
	@touch $@

novnc: $(NOVNC_DIR)/.installed-$(NOVNC_VERSION)

$(VENV)/.installed: pyproject.toml
	@echo "==> creating $(VENV) and installing skiff with its test extras"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check .

# The image tests (tests/image) build the system-VM image once (about 2-4 minutes cold
# on 2 cores, about 1 with the cached base) and boot it under qemu; SKIFF_IMAGE_TESTS=0
# skips them and their tools.
test: deps venv novnc lint
	@[ "$(SKIFF_IMAGE_TESTS)" = 0 ] || $(MAKE) --no-print-directory image-deps
	$(VENV)/bin/pytest -q
	SKIFF_TEST_DB=postgresql $(VENV)/bin/pytest -q tests/mgmt

test-fast: venv
	$(VENV)/bin/pytest -q -m "not lab and not image"

bench: deps venv novnc
	$(PY) benchmarks/run.py $(B)

docs: venv
	$(PY) -m mgmt.api.docs --out docs/api

image: deps image-deps venv novnc
	$(VENV)/bin/skiff image build

demo: deps venv
	$(VENV)/bin/skiff demo

demo-down: venv
	$(VENV)/bin/skiff demo down

demo-router: deps venv
	$(VENV)/bin/skiff lab demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis $(NOVNC_DIR) $(NOVNC_NPM)/node_modules
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
