# Image for the web service, workers and the reconcile job (k8s/). Not built in CI.
FROM python:3.11-slim
WORKDIR /srv
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
