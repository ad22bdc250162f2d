"""Evaluation of neural worlds against the real game: drift, the fidelity ladder, the main job."""
