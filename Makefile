# The two commands: `make demo` (set-up + the main job) and `make test`
# (set-up + the whole suite). Set-up is a virtual environment in .venv with the
# project installed against the tested pins in constraints.txt.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SHADOW := $(BIN)/shadow
DEMO_CONFIG := datasets/noaa-weather/sweep.toml

# Debian packages the project uses: Fashion-MNIST (the image catalog entry) and
# Chromium (the test that renders the HTML report headless).
SYSTEM_PACKAGES := dataset-fashion-mnist chromium

.PHONY: install system-deps demo test test-fast lint bench clean

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo ">> no apt-get: install $$missing yourself"; exit 1; fi; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	echo ">> installing Debian packages:" $$missing; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null

$(STAMP): pyproject.toml constraints.txt | system-deps
	@echo ">> setting up $(VENV) (first time: about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --progress-bar off -c constraints.txt -e ".[all,test,bench,lint]"
	@touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default: a shadow sweep on the real NOAA weather
# data on a local Ray, the leaderboard, and promotion of the best challenger.
demo: $(STAMP)
	$(SHADOW) datasets
	$(SHADOW) sweep run $(DEMO_CONFIG)
	$(SHADOW) leaderboard --top 5
	@echo '$(SHADOW) promote --best --reason "make demo: rank 1 of the latest sweep"'
	@# Exit 2 here is the gate refusing a challenger that is not truly better than the
	@# champion (e.g. on a second run): the demo reports it and goes on.
	@rc=0; $(SHADOW) promote --best --reason "make demo: rank 1 of the latest sweep" || rc=$$?; \
	if [ $$rc = 2 ]; then echo ">> the gate kept the current champion (reason above)"; \
	elif [ $$rc != 0 ]; then exit $$rc; fi
	$(SHADOW) history
	@echo
	@echo ">> done. The production model an edge app loads: .shadow/channels/production/model.onnx"
	@echo ">> the same steps by hand (after 'source $(VENV)/bin/activate'):"
	@echo "     shadow sweep run $(DEMO_CONFIG)"
	@echo "     shadow leaderboard --top 5"
	@echo "     shadow promote --best"
	@echo "     shadow history"
	@echo "     shadow rollback        # undo the promotion"
	@echo "     # or, instead of 'promote --best': ship rank 1 retrained on its slice + the holdout"
	@echo "     shadow promote --best --refit"

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
