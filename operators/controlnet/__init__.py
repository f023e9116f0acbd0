"""ControlNet preprocessors and detectors (edges, lineart, depth, normals, pose, faces, segmentation).
The networks are in ``invokeai_provider.models.annotators``.
"""
