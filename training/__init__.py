"""RLVR training (hierarchical GRPO with coordinate ascent): not built yet, see the training issue.
The pieces it will stand on already live in the sampler: rollouts (Engine), re-scoring of recorded
actions (sampler.scoring) and the checkpoint format."""
