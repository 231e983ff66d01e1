"""Tools: plain typed functions over the core records, usable from a notebook.

A tool never imports LangGraph; graphs/ adapts tools to nodes.
"""
