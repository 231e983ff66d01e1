"""Shipped data files (server catalog snapshot, datasheets), loaded with importlib.resources."""
