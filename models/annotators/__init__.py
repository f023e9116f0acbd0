"""The ControlNet preprocessor networks (HED, PiDiNet, lineart, M-LSD, NormalBae, DWPose, mediapipe face)
and the loader of their checkpoints from ``<model root>/core``.
"""
