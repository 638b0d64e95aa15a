"""Online RL with verifiable rewards (GRPO family): rollouts on the engine, rewards from the grader,
group-relative advantages and a clipped surrogate, trained in place on the learner's parameters."""
