"""TensorFlow/Keras, grouped by role. No Luigi imports; tasks/ calls in from ``run()``.

    card.py, config.py, cpu.py   the contracts every part reads (no TensorFlow)
    nets/       networks: DCGAN, CapsNet, seed G, heads, norms, fast layers
    variants/   one module per GAN objective, the registry, the losses, EGAN's extractors
    train/      the one training loop, data, optimizers, EMA, augmentation, recipes,
                sampling and the serving export
    eval/       metrics (FID/KID, face rate), the fast Inception, evaluation,
                comparison, classifier, tuning
    apps/       completion, projection, inversion, directions, attribute classifier
"""
from pipeline.console import tensorflow_defaults

# Before any model module imports TensorFlow, which reads its oneDNN switch at import.
tensorflow_defaults()
