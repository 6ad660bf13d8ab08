# syntax=docker/dockerfile:1
# Docnum as a container image. The first stage builds the wheel (which carries the migrations as
# app/migrations) and installs it into a virtual environment; the runtime stage gets only that
# environment: no sources, no pip cache, no compilers. Every setting is an environment variable
# (DOCNUM_*, DATABASE_URL); see docs/operations.md. No demo: it would print an admin key into the
# container's logs; the first key comes from `docnum keys create`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
RUN python -m venv /opt/docnum \
    && /opt/docnum/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/docnum/bin/pip install /wheels/docnum-*.whl
# Fail the build if the installed package cannot find its migrations.
WORKDIR /
RUN /opt/docnum/bin/python -c "from app.migrate import load_migrations; assert load_migrations()"

FROM ${PYTHON_IMAGE}
RUN useradd --system --no-log-init --uid 10001 --user-group \
        --home-dir /var/lib/docnum --create-home --shell /usr/sbin/nologin docnum
COPY --from=build /opt/docnum /opt/docnum
ENV PATH=/opt/docnum/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DOCNUM_HOST=0.0.0.0 \
    DOCNUM_PORT=8000 \
    DOCNUM_DEMO=false \
    DOCNUM_DATA_DIR=/var/lib/docnum
USER 10001:10001
WORKDIR /var/lib/docnum
EXPOSE 8000
# The slim image has no curl; the standard library answers the probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DOCNUM_PORT', '8000'), timeout=2)"]
# SIGTERM: stop accepting, finish requests in flight, give back cached values: 5 s at most.
STOPSIGNAL SIGTERM
ENTRYPOINT ["docnum"]
CMD ["serve"]
