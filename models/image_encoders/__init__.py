"""Image encoders that several families' adapters share: CLIP vision (IP-Adapters of SD and FLUX)."""
