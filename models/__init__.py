"""Mechanistic models of neural dynamics: simulators, likelihoods, stimuli, features (no inference code)."""
