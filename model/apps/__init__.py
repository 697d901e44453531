"""Applications of a trained generator: completion, projection, the shared inversion
search, attribute directions and the attribute classifier.
"""
