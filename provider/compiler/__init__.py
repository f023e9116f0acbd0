"""Graph to Airflow DAG: the plan (which nodes run together as one task), the trigger-form Params, DAG
building and DAG-file rendering, and the factory that turns a folder of workflows into DAGs.
"""
