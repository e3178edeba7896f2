# From a fresh clone: `make course`, `make test` and `make check` (what CI runs). Both build the pinned
# environment first (.venv, torch 2.13.0 CPU via requirements/constraints.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt

.PHONY: env course test check lab dashboard site slides lessons grade student zoo bench bench-deepconcolic gpu-check lint clean

env: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt binder/overrides.json
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e ".[course,test]"
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp binder/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	touch $(STAMP)

# The lessons' models are tiny: one thread each, since threads waiting on a busy core cost a lesson
# ten times its time (02a took 9 minutes instead of 30 s beside other work on two cores).
course: $(STAMP)  ## run every lesson headless (fast mode), HTML under build/, summary table
	OMP_NUM_THREADS=1 $(PY) course/run.py

# One worker per core, each single-threaded: the models are tiny, and threads of two workers
# (or of a worker and a notebook kernel) fighting over the cores cost far more than they give.
# --dist loadfile keeps each notebook's cells on one worker (nbval runs them in order).
test: $(STAMP)  ## the test suite: library, widgets, each lesson once in fast mode, nbval
	OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadfile -m "not matrix and not browser and not environments and not benchmarks"

# The matrix: every lesson's fast mode again with other seeds and on torch's generic kernels; the
# site and JupyterLab in a real browser (skipped without Debian's chromium and chromium-driver);
# fresh Binder and Colab-style environments (skipped without a package index).
check: test  ## make test, then the matrix, browser, environment and benchmark tests (what CI runs)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadfile -m "matrix or browser or environments or benchmarks"

# JupyterLab draws the widgets of a saved lesson (their first frame, from the stored widget state)
# only in a trusted notebook; the lessons are ours, so trust them first.
lab: $(STAMP)  ## open JupyterLab on the lessons
	$(VENV)/bin/jupyter trust lessons/*.ipynb
	$(VENV)/bin/jupyter lab lessons/

# Voila runs course/dashboard.ipynb afresh and shows only its text and widgets (no code), in the
# browser it opens. Offline: course/voila/templates/robustlab is Voila's lab template without its
# Font Awesome from a CDN, and of the JupyterLab extensions only the widget managers are loaded (others
# in the env, such as notebook 7's, fail to load in Voila and log errors). Tracebacks show on
# the page, so a broken cell is seen, not a blank space. tests/test_browser_dashboard.py reads these.
VOILA_FLAGS := --template=robustlab --show_tracebacks=True \
	--VoilaConfiguration.extension_allowlist=@voila-dashboards/widgets-manager8 \
	--VoilaConfiguration.extension_allowlist=@jupyter-widgets/jupyterlab-manager

dashboard: $(STAMP)  ## the widgets of 01, 02a and 03b as a Voila app, for a live tutorial
	JUPYTER_PATH="$(CURDIR)/course$${JUPYTER_PATH:+:$$JUPYTER_PATH}" OMP_NUM_THREADS=1 \
		$(VENV)/bin/voila course/dashboard.ipynb $(VOILA_FLAGS)

site: $(STAMP)  ## the course as a static site that works offline, in build/site/
	$(PY) course/site.py

# reveal.js 3.9 comes from the rise package (in the course extra), so this needs no network.
slides: $(STAMP)  ## each lesson as reveal.js slides that work offline, in build/slides/
	$(PY) course/slides.py

lessons: $(STAMP)  ## re-execute the lessons in full mode and store their outputs
	OMP_NUM_THREADS=1 $(PY) course/run.py --inplace

# NB: a student's copy of a lesson (made by `make student`), run in quick mode and marked per exercise
grade: $(STAMP)  ## mark a student's notebook: make grade NB=path/to/01-introduction.ipynb
	@test -n "$(NB)" || { echo "usage: make grade NB=path/to/student-notebook.ipynb"; exit 2; }
	OMP_NUM_THREADS=1 $(PY) course/grade.py "$(NB)" --json "$(basename $(NB)).marks.json"

student: $(STAMP)  ## student copies of the lessons (solutions removed) in build/student/
	$(PY) course/student.py

zoo: $(STAMP)  ## retrain the model zoo from its recipes (writes robustlab/weights/)
	$(PY) -m robustlab.zoo build

# auto_LiRPA, the reference of benchmarks/verify.py, comes from a pinned commit (its PyPI release
# does not import beside numpy 2); offline, point AUTO_LIRPA at a checkout of that commit. If it
# cannot be installed, verify.py says so and skips the comparison.
AUTO_LIRPA ?= git+https://github.com/Verified-Intelligence/auto_LiRPA@a050a3d61f4cb68b108fa7f07dcb3e4d7ef304df

# The references of benchmarks/stats_references.py are the authors' research code, not packages:
# checkouts at pinned commits under build/refs (offline, point OVAL_SPLITTING and
# WEIGHT_CORRELATION at checkouts of those commits). Where a clone fails, the script skips.
OVAL_SPLITTING ?= build/refs/statistical-robustness
OVAL_SPLITTING_GIT := https://github.com/oval-group/statistical-robustness@5234e3833f027ecdc99609864da123358ce910e2
WEIGHT_CORRELATION ?= build/refs/NeurIPS2020_Weight_Correlation
WEIGHT_CORRELATION_GIT := https://github.com/Alexkael/NeurIPS2020_Weight_Correlation@18f26dda2ad442e631581e80e131734dd8772887
# $(call checkout,folder,url@commit): clone once, then check the commit out
checkout = test -d $(1) || (git clone --quiet $(firstword $(subst @, ,$(2))) $(1) && git -C $(1) checkout --quiet $(lastword $(subst @, ,$(2))))

bench: $(STAMP)  ## benchmarks against reference libraries (installs the bench extra)
	$(PY) -m pip install --quiet --no-deps torchattacks
	$(PY) benchmarks/attacks.py
	$(PY) -m pip install --quiet --no-deps adversarial-robustness-toolbox
	$(PY) benchmarks/defences.py
	$(PY) benchmarks/stats.py
	-$(call checkout,$(OVAL_SPLITTING),$(OVAL_SPLITTING_GIT))
	-$(call checkout,$(WEIGHT_CORRELATION),$(WEIGHT_CORRELATION_GIT))
	OVAL_SPLITTING=$(OVAL_SPLITTING) WEIGHT_CORRELATION=$(WEIGHT_CORRELATION) $(PY) benchmarks/stats_references.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/defence_methods.py
	-$(PY) -m pip install --quiet --no-deps appdirs graphviz "$(AUTO_LIRPA)"
	$(PY) benchmarks/verify.py
	$(PY) -m pip install --quiet --no-deps -r benchmarks/requirements-textattack.txt
	OMP_NUM_THREADS=1 $(PY) benchmarks/text_attacks.py
	$(PY) -m pip install --quiet --no-deps deeprobust==0.2.11 numba==0.68.1 llvmlite==0.50.0
	OMP_NUM_THREADS=1 $(PY) benchmarks/graph_attacks.py

# DeepConcolic (table 3 of benchmarks/stats_references.py) is Keras code for Python <= 3.8, so it
# runs in its own environment, build/tfvenv (requirements/deepconcolic.txt), never in .venv;
# TF_PYTHON is a Python 3.8 to build it with. Offline, point DEEPCONCOLIC at a checkout of the
# commit below and DEEPCONCOLIC_PYTHON at such an environment's python.
DEEPCONCOLIC ?= build/refs/DeepConcolic
DEEPCONCOLIC_GIT := https://github.com/TrustAI/DeepConcolic@baece182b34a50fbc781993b1d46bb293976ca9a
DEEPCONCOLIC_PYTHON ?= build/tfvenv/bin/python
TF_PYTHON ?= python3.8

bench-deepconcolic: $(STAMP)  ## neuron coverage and concolic testing against DeepConcolic (builds its TensorFlow venv)
	$(call checkout,$(DEEPCONCOLIC),$(DEEPCONCOLIC_GIT))
	test -x $(DEEPCONCOLIC_PYTHON) || ($(TF_PYTHON) -m venv build/tfvenv && \
		build/tfvenv/bin/pip install --quiet -r requirements/deepconcolic.txt)
	DEEPCONCOLIC=$(DEEPCONCOLIC) DEEPCONCOLIC_PYTHON=$(DEEPCONCOLIC_PYTHON) OMP_NUM_THREADS=1 \
		$(PY) benchmarks/stats_references.py --skip split --skip wc

# Needs a CUDA GPU (and torch with CUDA in the venv); fails at once without one. The comparisons
# with the reference libraries need them installed first (`make bench` does), else skipped.
gpu-check: $(STAMP)  ## CUDA tests, every lesson in full mode (timed), benchmarks on cuda: build/gpu-check/report.md
	$(PY) benchmarks/gpu_check.py

lint: $(STAMP)
	$(VENV)/bin/ruff check robustlab tests benchmarks course

clean:
	rm -rf build $(VENV)
