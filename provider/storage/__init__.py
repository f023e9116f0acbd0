"""The artifact store: the backend contract, the local directory backend and the run store (``base``), and
the S3 backend (``s3``; the Airflow connection hook over it lives with the other Airflow classes).
"""
