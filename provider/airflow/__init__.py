"""The Airflow side of a node: the operator class made from each node type.
"""
