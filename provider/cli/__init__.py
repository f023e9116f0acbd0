"""The ``invokeai-airflow`` command: one module per command group, ``app`` builds the parser."""

from invokeai_provider.cli.app import main

__all__ = ["main"]
