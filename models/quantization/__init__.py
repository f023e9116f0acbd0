"""Quantized weight formats kept quantized in memory (GGUF)."""
