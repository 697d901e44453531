"""Networks: the DCGAN and CapsNet bodies, the seed report's generator, discriminator
heads, normalisation, and the fast drop-in layers.
"""
