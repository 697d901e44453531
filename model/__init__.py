"""TensorFlow/Keras: networks, losses, training loop, input pipeline, sampling.

No Luigi imports here; tasks/ calls into these modules from ``run()``.
"""
