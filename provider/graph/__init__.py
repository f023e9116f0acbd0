"""Graphs as InvokeAI writes them: the graph model and its validation, saved workflows, batches, and the
engine that runs a (sub)graph in one process with InvokeAI's semantics.
"""
