"""Graph to Airflow DAG.

- `plan`: which nodes run together as one task
- `params`: the trigger form (one Param per exposed field and batch datum), built from `param_schema` (annotation
  and constraints → JSON schema), `param_values` (node values ↔ Param values), `model_choices` (the model
  dropdowns) and `tenant_param` (the ``tenant`` Param)
- `dag_docs`: the DAG's doc_md
- `dags`: compiling a document into a DAG (``compile_dag``); `render`: the readable DAG file the CLI writes
- `dag_factory`: a folder of workflows → DAGs
"""
