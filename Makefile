# The README's commands. Each target is a script under scripts/ that you can also run directly.
.PHONY: demo test ui lint bench clean

demo:  ## install, migrate, ingest + nightly_eval DAGs, then the local LLM: one answer with its groundedness verdict and a promote_prompt decision
	bash scripts/demo.sh

test:  ## install the pinned requirements plus test tools and run the whole test suite
	bash scripts/test.sh

ui:  ## Airflow UI (standalone) on this project; Ctrl-C stops it cleanly
	bash scripts/ui.sh

bench:  ## SciFact ingest, eval and rebuild benchmarks (needs ../shared/datasets/scifact); figures in bench/results/
	bash scripts/setup.sh && . scripts/env.sh && python bench/ingest_scifact.py && python bench/eval_scifact.py && python bench/rebuild_scifact.py && python bench/drift_scifact.py && python bench/scaleout_scifact.py

clean:  ## remove local state (venv, Airflow home, data dir)
	rm -rf .venv .airflow .ragops
