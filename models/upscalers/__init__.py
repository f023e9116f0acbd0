"""Image-to-image networks: the RRDB generator (ESRGAN and PBR maps) and spandrel-loaded models.
"""
