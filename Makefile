# sfc-k8s build and test entry points.
#
# `make test` and `make demo` are the two commands a new user (and CI) runs on a fresh
# Debian machine as root: each installs what it needs (apt packages, the venv, the compiled
# eBPF object) and is safe to run again.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
ARCH := $(shell uname -m)

APT_PKGS := clang llvm libbpf-dev bpftool iperf3 iputils-ping containernetworking-plugins \
            iproute2 ethtool musl-tools

BPF_DIR := src/sfc_k8s/dataplane/bpf
BPF_SRC := $(wildcard $(BPF_DIR)/*.bpf.c)
BPF_OBJ := $(BPF_SRC:.c=.o)
BPF_HDR := $(wildcard $(BPF_DIR)/lib/*.h)
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -mcpu=v3 \
              -I/usr/include/$(ARCH)-linux-gnu -I$(BPF_DIR)
# The Maglev table builder's C loop, loaded with ctypes (sfc_k8s/dataplane/maglev.py).
MAGLEV_SRC := src/sfc_k8s/dataplane/native/sfc_maglev.c
MAGLEV_SO := src/sfc_k8s/dataplane/native/libsfcmaglev.so

PYTEST_ARGS ?=

.PHONY: all deps apt venv bpf bpf-variant cni-bin cni-shim test lint typecheck pytest demo bench image clean

all: deps

deps: apt venv bpf cni-bin cni-shim

# Installs only what is missing, so a second run costs one dpkg query per package.
apt:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev,local]'
	@touch $@

bpf: $(BPF_OBJ) $(MAGLEV_SO)

# CNI_PATH for tests, benchmarks and the local cluster: the reference plugins of
# containernetworking-plugins beside sfc-cni, a launcher that starts Python without site
# (docs/cni.md: start-up is most of an ADD; the plugin is stdlib-only, so Debian's faster-starting
# python3.11 runs it when present, else the venv's), its bytecode compiled ahead.
CNI_BIN := build/cni
CNI_PYTHON ?= /usr/bin/python3.11
cni-bin: apt venv
	@mkdir -p $(CNI_BIN)
	@for p in /usr/lib/cni/*; do ln -sfn $$p $(CNI_BIN)/$$(basename $$p); done
	@$(PY) -m sfc_k8s.cni.launcher --python $(CNI_PYTHON) $(CNI_BIN)/sfc-cni
	@$(PY) -m compileall -q src/sfc_k8s/__init__.py src/sfc_k8s/cni src/sfc_k8s/naming.py \
		src/sfc_k8s/coldstart.py

# The compiled sfc-cni shim installed on real nodes (docs/cni.md): static with musl, so it runs on
# any node; its protocol constants come from sfc_k8s/cni/wire.py through a generated header.
SHIM_SRC := src/sfc_k8s/cni/shim/sfc_cni_shim.c
SHIM_DIR := build/shim
SHIM_BIN := $(SHIM_DIR)/sfc-cni
cni-shim: $(SHIM_BIN)

$(SHIM_BIN): $(SHIM_SRC) src/sfc_k8s/cni/wire.py src/sfc_k8s/cni/config.py | apt venv
	@mkdir -p $(SHIM_DIR)
	PYTHONPATH=src $(PY) -m sfc_k8s.cni.wire --header > $(SHIM_DIR)/sfc_cni_wire.h
	musl-gcc -static -s -Os -Wall -Wextra -Werror -I$(SHIM_DIR) $(SHIM_SRC) -o $@

$(BPF_DIR)/%.bpf.o: $(BPF_DIR)/%.bpf.c $(BPF_HDR) | apt
	clang $(BPF_CFLAGS) -c $< -o $@

# A variant of the object for tests only (tests/bpf/builds.py), never the shipped one:
# `make bpf-variant OUT=/tmp/x.bpf.o DEFINES="-DSFC_TEST_COUNT"`.
bpf-variant:
	@test -n "$(OUT)" || { echo "make bpf-variant: set OUT=path of the object to write" >&2; exit 1; }
	clang $(BPF_CFLAGS) $(DEFINES) -c $(BPF_DIR)/sfc_xc.bpf.c -o $(OUT)

$(MAGLEV_SO): $(MAGLEV_SRC) | apt
	clang -O2 -Wall -Wextra -Werror -shared -fPIC $< -o $@

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

pytest: deps
	$(PY) -m pytest $(PYTEST_ARGS)

test: deps lint typecheck pytest

demo: deps
	$(BIN)/sfc-k8s demo

bench: deps
	$(PY) bench/dataplane.py
	$(PY) bench/cni.py
	$(PY) bench/dataplane_ops.py
	$(PY) bench/control_plane.py
	$(PY) bench/crossnode.py
	$(PY) bench/node_loss.py

# The image's name and tag come from deploy/base/kustomization.yaml (`images:`), the one place
# they are set; IMAGE=... overrides.
IMAGE_TAG := $(shell sed -n 's/^ *newTag: *//p' deploy/base/kustomization.yaml)
IMAGE ?= sfc-k8s:$(IMAGE_TAG)
CONTAINER_ENGINES := docker podman
image:
	@engine=""; seen=""; \
	for e in $(CONTAINER_ENGINES); do \
	  command -v $$e >/dev/null 2>&1 || continue; \
	  seen="$$seen $$e"; \
	  if $$e info >/dev/null 2>&1; then engine=$$e; break; fi; \
	done; \
	if [ -z "$$engine" ]; then \
	  if [ -z "$$seen" ]; then \
	    echo "make image: neither docker nor podman is installed; install one to build $(IMAGE)" >&2; \
	  else \
	    echo "make image: found$$seen but it cannot build (is its daemon running? try '$${seen# } info')" >&2; \
	  fi; \
	  exit 1; \
	fi; \
	echo "building $(IMAGE) with $$engine"; \
	$$engine build -f deploy/Dockerfile -t $(IMAGE) .

clean:
	rm -f $(BPF_OBJ) $(MAGLEV_SO)
	rm -rf build .mypy_cache .ruff_cache .pytest_cache
