"""Training on graph traces: GRPO with ReVSeg's format, temporal and spatial rewards.

Rollouts are graph runs (`rollouts`), recorded as traces (`store`); the trainer (`trainer`)
replays their token ids and visuals through the policy (`replay`), scores them with the rewards
(`rewards`) and minimises TRL's GRPO objective (`loss`) with AdamW and fp32 master weights
(`optim`); `checkpoint` and `metrics_log` are its records, `plan` its memory arithmetic; `sft` is
the supervised warm start; recipes (`recipe`) configure a run.
"""
