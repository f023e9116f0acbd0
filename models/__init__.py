"""Model manager: taxonomy, probing, install, registry, caches and loaders.

Only the taxonomy exists so far; it is import-light so node field types can use it at parse time.
"""
