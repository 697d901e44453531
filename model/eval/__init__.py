"""Evaluation: sample-quality metrics (FID/KID, face rate), the fast Inception, whole-run
evaluation, GAN comparisons, the project's classifier and hyper-parameter search.
"""
