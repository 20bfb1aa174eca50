"""Training on graph traces: GRPO with ReVSeg's format, temporal and spatial rewards.

Rollouts are graph runs (`rollouts`), recorded as traces (`store`); the trainer (`grpo`)
replays their token ids and visuals through the policy (`replay`) and scores them with the
rewards (`rewards`); `sft` is the supervised warm start; recipes (`recipe`) configure a run.
"""
