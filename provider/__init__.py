"""airflow-provider-invokeai: InvokeAI node graphs and saved workflows as Apache Airflow 3 DAGs."""

__version__ = "0.1.0"
