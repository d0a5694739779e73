"""Rows of the layer table, one module per family."""
