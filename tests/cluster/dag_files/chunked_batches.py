"""Airflow DAGs: the prompt-list batch workflow compiled twice with explicit chunk sizes, for the chunking test: 16
items per mapped task instance, and one (the unchunked reference)."""

from __future__ import annotations

from pathlib import Path

from invokeai_provider.compiler.dags import compile_dag

WORKFLOW = Path(__file__).with_name("workflows") / "prompt-list-batch.json"

chunks_of_16 = compile_dag(WORKFLOW, dag_id="prompt-list-batch-chunks-16", chunk_size=16)
unchunked = compile_dag(WORKFLOW, dag_id="prompt-list-batch-unchunked", chunk_size=1)
