# Image for the web service, workers and the reconcile job (k8s/). Not built in CI.
FROM python:3.11-slim
WORKDIR /srv
# DejaVu Sans: the Region A PDF embeds it for names outside Latin-1 (PDF_FONT_PATH).
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY app app
COPY connector connector
COPY webhooks webhooks
COPY migrations migrations
COPY scripts scripts
COPY alembic.ini gunicorn.conf.py wsgi.py ./
USER 65534
EXPOSE 8000
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
