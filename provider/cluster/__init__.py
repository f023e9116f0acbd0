"""Running Airflow here: the one-command local cluster (PostgreSQL, Redis, SeaweedFS S3, Celery workers),
its SeaweedFS server, and the embedded SQLite Airflow that ``invokeai-airflow run`` and ``demo`` use.
"""
