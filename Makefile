# finegrained_ops developer commands. `make test` and `make demo` install everything they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TORCH_VERSION := 2.13.0
# What the build needs before `pip install -e '.[all,test]'` adds every optional, test and
# benchmark dependency; torch is pinned because an unpinned torch pulls several GB of CUDA
# packages on a CPU machine.
DEPS := numpy ninja setuptools wheel

# Use the active virtual/conda environment when there is one, else a local .venv.
ifneq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
PYTHON ?= python
else
PYTHON ?= .venv/bin/python
endif

NVCC ?= nvcc
CUDA_ARCH ?= sm_90

.PHONY: help install build test sanitize package-check cuda-check gpu-check demo bench info clean

help:
	@echo "make install     install pinned torch + dependencies, build the extension (editable)"
	@echo "make build       rebuild the native extension in place (incremental)"
	@echo "make test        install, compile-check CUDA sources (if nvcc), run pytest"
	@echo "make sanitize    the op tests and the CUDA emulation under ASan + UBSan (tools/sanitize.py)"
	@echo "make package-check  build the sdist, a wheel from it in a fresh venv, check and run it (tools/package_check.py)"
	@echo "make cuda-check  compile every CUDA source with nvcc for $(CUDA_ARCH)"
	@echo "make gpu-check OUT=dir [DRY_RUN=1] [BENCH=full]  the GPU validation run (tools/gpu_check.py)"
	@echo "make demo        install, then run the end-to-end demo on bundled data"
	@echo "make bench       install, then run the benchmark suite"

.venv/bin/python:
	python3 -m venv .venv

# pip runs when the packaging files change (editable installs always compile from scratch in
# a temporary directory); a csrc/ change only recompiles what changed, with ninja, in build/.
STAMP := build/.installed$(subst /,_,$(VIRTUAL_ENV)$(CONDA_PREFIX))
install: $(if $(filter .venv/bin/python,$(PYTHON)),.venv/bin/python)
	@mkdir -p build; \
	if [ ! -f $(STAMP) ] || [ setup.py -nt $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ] \
	   || [ Makefile -nt $(STAMP) ] || ! $(PYTHON) -c "import finegrained_ops" 2>/dev/null; then \
	  set -x; \
	  $(PYTHON) -m pip install -q torch==$(TORCH_VERSION) $(DEPS) && \
	  $(PYTHON) -m pip install -q --no-build-isolation -e '.[all,test]' && touch $(STAMP); \
	elif [ -n "$$(find csrc -type f -newer $(STAMP))" ]; then \
	  $(MAKE) --no-print-directory build && touch $(STAMP); \
	fi
	@$(PYTHON) -m finegrained_ops info

build:
	$(PYTHON) setup.py -q build_ext --inplace

# Compiles the kernel headers alone and the torch-facing launchers against torch's headers:
# no GPU or CUDA torch needed (see tools/cuda_check.sh).
cuda-check:
	@if ! command -v $(NVCC) >/dev/null 2>&1; then echo "cuda-check: nvcc not on PATH, skipped"; exit 0; fi; \
	tools/cuda_check.sh $(NVCC) $(CUDA_ARCH) $(PYTHON)

# The GPU validation run in one call (tools/gpu_check.py): in-place build, CUDA tests,
# CUDA-vs-CPU smoke, compute-sanitizer, quick GPU benchmark; logs and summary.md under OUT.
# On a GPU machine with no virtual environment it uses python3 and installs nothing;
# DRY_RUN=1 (here) installs as `make test` does and runs every step that needs no GPU.
OUT ?= gpu-check
GPU_CHECK_PYTHON := $(if $(DRY_RUN)$(wildcard .venv/bin/python)$(VIRTUAL_ENV)$(CONDA_PREFIX),$(PYTHON),python3)
gpu-check: $(if $(DRY_RUN),install)
	$(GPU_CHECK_PYTHON) tools/gpu_check.py --out $(OUT) $(if $(DRY_RUN),--dry-run) $(if $(BENCH),--bench $(BENCH))

test: install
	@if command -v $(NVCC) >/dev/null 2>&1; then $(MAKE) --no-print-directory cuda-check; fi
	$(PYTHON) -m pytest -q

# A separate ASan + UBSan build in build/sanitize/; fails on any report touching csrc/.
sanitize: install
	$(PYTHON) tools/sanitize.py

# The sdist holds what a build needs, and the wheel built from it pins its torch.
package-check: install
	$(PYTHON) tools/package_check.py

demo: install
	$(PYTHON) -m finegrained_ops demo

bench: install
	$(PYTHON) -m finegrained_ops bench

info:
	$(PYTHON) -m finegrained_ops info

clean:
	rm -rf build finegrained_ops/_C*.so *.egg-info
