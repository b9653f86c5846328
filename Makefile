# Every command sets up .venv when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test soak lint format schemas messages bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)  ## run the platform on its embedded default, with the scenarios seeded
	$(BIN)/ketnoi demo $(DEMO_ARGS)

test: $(STAMP)  ## the whole suite (PostgreSQL: see tests/support/postgres.py)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

soak: $(STAMP)  ## the fault suite with 100 kills of each process, then 50 clients for 10 minutes
	KETNOI_FAULT_KILLS=100 KETNOI_SOAK_SECONDS=600 KETNOI_SOAK_CLIENTS=50 REQUIRE_SERVICES=1 \
		$(BIN)/python -m pytest tests/e2e/test_faults.py -s $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff, mypy and the import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schemas: $(STAMP)  ## regenerate the committed JSON Schemas and AsyncAPI document from contracts/
	$(BIN)/python -m contracts.schemagen
	$(BIN)/python -m contracts.asyncapi

LOCALE_DIR := services/web/locale

messages: $(STAMP)  ## extract the web app's strings, update the vi and en catalogues, compile them
	$(BIN)/pybabel extract --no-location --sort-output -k N_ -F services/web/babel.cfg \
		--project Ketnoi --copyright-holder "Ketnoi contributors" -o $(LOCALE_DIR)/messages.pot.new .
	@# A template that differs only in its creation date is left as it was.
	if diff -q -I '^"POT-Creation-Date:' $(LOCALE_DIR)/messages.pot.new $(LOCALE_DIR)/messages.pot >/dev/null 2>&1; \
		then rm $(LOCALE_DIR)/messages.pot.new; \
		else mv $(LOCALE_DIR)/messages.pot.new $(LOCALE_DIR)/messages.pot; fi
	for lang in vi en; do \
		if [ -f $(LOCALE_DIR)/$$lang/LC_MESSAGES/messages.po ]; then \
			$(BIN)/pybabel update --no-fuzzy-matching --ignore-pot-creation-date -i $(LOCALE_DIR)/messages.pot -d $(LOCALE_DIR) -l $$lang; \
		else \
			$(BIN)/pybabel init -i $(LOCALE_DIR)/messages.pot -d $(LOCALE_DIR) -l $$lang; \
		fi; \
	done
	$(BIN)/python -m services.web.catalogue
	$(BIN)/pybabel compile --statistics -d $(LOCALE_DIR)

bench: $(STAMP)  ## benchmarks against the raw limits of this machine (PostgreSQL needed)
	$(BIN)/python -m bench.intake_throughput
	$(BIN)/python -m bench.rebuild_rate
	$(BIN)/python -m bench.feed_latency
	$(BIN)/python -m bench.read_audit
	$(BIN)/python -m bench.verify
	$(BIN)/python -m bench.crypto
	$(BIN)/python -m bench.web_pages

clean:
	rm -rf $(VENV) .ketnoi .ketnoi-demo .pytest_cache .mypy_cache .ruff_cache
