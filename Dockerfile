# ticklet: the forecast dataflow, the replay and the CLI in one image.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# CPU-only torch first: the default wheel from PyPI carries CUDA (several GB).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch

COPY pyproject.toml README.md ./
COPY core core
COPY ticklet ticklet
COPY dataflows dataflows
COPY operators operators
COPY models models
COPY sources sources
COPY sinks sinks
COPY scripts/run-forecast.sh scripts/run-forecast.sh
COPY data/sample data/sample
RUN pip install .

RUN useradd --create-home ticklet && mkdir -p /recovery /out && chown ticklet /recovery /out
USER ticklet
CMD ["scripts/run-forecast.sh"]
