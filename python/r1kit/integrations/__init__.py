"""Drop-in pieces for the trainers people already run.

- :mod:`r1kit.integrations.verl`: r1kit's estimators and policy losses registered in verl 0.9.1
  (loaded in every Ray worker through the ``verl.plugins`` entry point) and a ``compute_score``.
- :mod:`r1kit.integrations.trl`: reward functions with TRL's signature and a GRPO trainer that
  uses r1kit's estimators and structured parallel-thinking masks.

Each module imports its library lazily, so ``import r1kit`` never needs verl or TRL.
"""
