"""The artifact store: the backend contract, the local directory backend and the run store (``base``), and
the S3 backend (``s3``; its Airflow connection hook is ``invokeai_provider.airflow.hooks``).
"""
