# finegrained_ops developer commands. `make test` and `make demo` install everything they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TORCH_VERSION := 2.13.0
# Runtime + test + benchmark dependencies; torch is pinned because an unpinned torch pulls
# several GB of CUDA packages on a CPU machine.
DEPS := numpy scipy pot scikit-learn tqdm matplotlib pytest hypothesis pytorch-metric-learning \
        ninja setuptools wheel

# Use the active virtual/conda environment when there is one, else a local .venv.
ifneq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
PYTHON ?= python
else
PYTHON ?= .venv/bin/python
endif

NVCC ?= nvcc
CUDA_ARCH ?= sm_90

.PHONY: help install build test cuda-check demo bench info clean

help:
	@echo "make install     install pinned torch + dependencies, build the extension (editable)"
	@echo "make build       rebuild the native extension in place (incremental)"
	@echo "make test        install, compile-check CUDA sources (if nvcc), run pytest"
	@echo "make cuda-check  compile every CUDA source with nvcc for $(CUDA_ARCH)"
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
	  $(PYTHON) -m pip install -q --no-build-isolation -e . && touch $(STAMP); \
	elif [ -n "$$(find csrc -type f -newer $(STAMP))" ]; then \
	  $(MAKE) --no-print-directory build && touch $(STAMP); \
	fi
	@$(PYTHON) -m finegrained_ops info

build:
	$(PYTHON) setup.py -q build_ext --inplace

# Kernel headers (*_kernels.cuh) need only CUDA headers, so they compile without a GPU or a
# CUDA torch; FGO_CUDA_CHECK makes each header instantiate its launchers for every dtype.
# (The torch-facing *_cuda.cu launchers need a CUDA torch's headers: they build on a GPU machine.)
cuda-check:
	@if ! command -v $(NVCC) >/dev/null 2>&1; then echo "cuda-check: nvcc not on PATH, skipped"; exit 0; fi; \
	set -e; mkdir -p build/cuda-check; \
	for f in $$(cd csrc && find . -name '*_kernels.cuh' | sort); do \
	  tu=build/cuda-check/$$(basename $$f .cuh).cu; \
	  printf '#include "%s"\n' "$${f#./}" > $$tu; \
	  echo "nvcc $(CUDA_ARCH): csrc/$${f#./}"; \
	  $(NVCC) -std=c++20 -arch=$(CUDA_ARCH) -Icsrc -DFGO_CUDA_CHECK -c $$tu -o $${tu%.cu}.o; \
	done

test: install
	@if command -v $(NVCC) >/dev/null 2>&1; then $(MAKE) --no-print-directory cuda-check; fi
	$(PYTHON) -m pytest -q

demo: install
	$(PYTHON) -m finegrained_ops demo

bench: install
	$(PYTHON) -m finegrained_ops bench

info:
	$(PYTHON) -m finegrained_ops info

clean:
	rm -rf build finegrained_ops/_C*.so *.egg-info
