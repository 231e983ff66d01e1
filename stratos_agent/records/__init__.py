"""The pydantic records ("boxes") that flow between tools and live in the graph state.

One module per stage; records hold small values and paths only, never weights or datasets.
"""
