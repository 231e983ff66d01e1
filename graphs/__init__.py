"""LangGraph wiring: nodes, edges, interrupts, retry policies, the planner node."""
