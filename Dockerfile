# One image for every Fusebox service: edge agent, cloud ingest/api/migrate and the
# simulators. The entrypoint is the `fusebox` CLI; the compose file passes the
# subcommand (e.g. `cloud api --api-host 0.0.0.0`).
#
#   docker build -t fusebox .
#   docker run --rm fusebox --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Copy only what the package build needs (not .venv/, var/ or test artifacts).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocols ./protocols
COPY edge ./edge
COPY cloud ./cloud
COPY simulators ./simulators
COPY fusebox ./fusebox
RUN pip install . \
    && rm -rf /src

# Non-root; /var/lib/fusebox holds all state (edge outbox, embedded servers' data).
# The edge outbox directory is created here so a named volume mounted on it
# starts out owned by this user.
RUN useradd --system --uid 10001 --user-group \
        --home-dir /var/lib/fusebox --create-home --shell /usr/sbin/nologin fusebox \
    && mkdir -p /var/lib/fusebox/edge \
    && chown -R fusebox:fusebox /var/lib/fusebox
USER fusebox
WORKDIR /var/lib/fusebox

ENTRYPOINT ["fusebox"]
CMD ["--help"]
