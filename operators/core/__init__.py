"""Nodes with no model: control flow (iterate, collect, if), primitives, math, collections, strings,
prompts and metadata; and ``models``, the model-identifier checks every model-taking family shares.
"""
