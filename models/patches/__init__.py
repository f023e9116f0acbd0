"""Model patches applied at load time: LoRA and textual-inversion embeddings, and ``apply``, which loads
them through the model service for the nodes.
"""
