"""Training on graph traces (GRPO with ReVSeg's format, temporal and spatial rewards).

Not built yet: see the project's issue on training. Traces (`revseg_agent.traces`) already record
what replay needs: prompt and completion token ids, sampling-time log-probs, and the visuals by
reference.
"""
