"""The tenant image library: every image a run saves or someone uploads, by its InvokeAI ``image_name``.

- ``names``: InvokeAI-style names, unique in a tenant (a run's are deterministic, so a retry overwrites);
- ``images``: one record object per image, its thumbnail, uploads, starring, deleting, resolving a name;
- ``boards``: InvokeAI's boards;
- ``index``: a local SQLite cache of the records, for listing and filtering without reading every record.
"""
