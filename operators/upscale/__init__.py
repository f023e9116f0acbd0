"""Upscaling nodes: ESRGAN and spandrel image-to-image. The networks are in
``invokeai_provider.models.upscalers``.
"""
