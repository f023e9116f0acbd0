"""Array maths shared by image nodes and backends: colour spaces, the invisible watermark, tiling.
"""
