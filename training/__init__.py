"""RLVR training (installed as ``introllm.training``; depends on ``introllm.sampler``): hierarchical
GRPO with coordinate ascent (paper §4.3, Algorithm 1) and the baselines, run by ``introllm train``.

    config    typed dataclasses, one per concern (flags are generated from them)
    data      problems from files, reasoning-gym or the hub; prompts; the seeded order
    answers   which part of a completion is its final answer; math-verify checking
    rewards   reward functions by name, run in a worker process with a deadline
    losses    group advantages, clipped surrogate, KL, truncated IS weights, the one token aggregation
    methods   introllm, grpo, ead, tampo, prompt-level, always-update by name
    rollout   G samples per prompt from the engine, scored: the Rollout and SequenceStats records
    vllm_rollout  the rollout backend (torch or a colocated vLLM engine) and its weight sync
    update    one forward pass, step A (model) and step B (head), gradient accumulation
    state     resumable optimizer / RNG / data state in safetensors and JSON
    trainer   the loop
"""
