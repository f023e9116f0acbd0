"""Image nodes: image operations and adjustments, masks, infill, canvas helpers, tiles, PBR maps, and
``io``: how every node family loads its input images and saves its output image.
"""
