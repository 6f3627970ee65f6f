"""Simulation tooling (`cem.sim`): a customer simulator with ground truth, a random event
generator and the scoring of a run against its truth. Pure Python, like the domain."""
