"""A synthetic reasoning-VOS world: procedural scenes (`scenes`), queries that need ReVSeg's
reasoning over them (`queries`), and a writer in MeViS's layout (`dataset`, `revseg synth`)."""

from revseg_agent.synth.dataset import SPLITS, WorldSpec, write_world

__all__ = ["SPLITS", "WorldSpec", "write_world"]
