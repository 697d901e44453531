"""Training: the one GAN loop, its input pipeline, optimizers, EMA, augmentation, recipes,
sampling and the serving export.
"""
