"""What `langgraph.json` serves (`./revseg_agent/graphs/app.py:graph`): the chain compiled for a
server, specs as context and a client-ready output (`graphs.served`). Built when a server imports
this module, never when `revseg_agent` is imported."""

from __future__ import annotations

from revseg_agent.graphs.graph import build_graph

graph = build_graph(served=True)
