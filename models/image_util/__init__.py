"""Array maths shared by image nodes and backends: colour spaces, 8-bit conversion, the invisible watermark,
tiling.
"""
