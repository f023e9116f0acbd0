"""The artifact store: the backend contract, the local directory backend and the run store (``base``), and
the S3 backend with its Airflow hook (``s3``).
"""
