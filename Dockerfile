# The Parley image: one image for the API (`parley serve`), workers (`parley worker`) and beat
# (`parley beat`); docker-compose.yml picks the command per service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY platform ./platform
COPY workers ./workers
COPY integrations ./integrations
COPY webhooks ./webhooks
RUN pip install . \
    && useradd --create-home --uid 10001 parley \
    && mkdir -p /app/var \
    && chown parley /app/var

# Nothing here needs root (and Celery warns when a worker runs as root).
USER parley
# In a container the API must listen beyond loopback.
ENV PARLEY_HOST=0.0.0.0
EXPOSE 8080
CMD ["parley", "serve"]
