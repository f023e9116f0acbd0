"""The Airflow side of a node: the operator class made from each node type, and the S3 connection hook.
"""
