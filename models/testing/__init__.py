"""Tiny random-weight models of the real architectures, for tests and offline smoke tests.
"""
