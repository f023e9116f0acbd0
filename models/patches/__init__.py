"""Model patches applied at load time: LoRA and textual-inversion embeddings.
"""
