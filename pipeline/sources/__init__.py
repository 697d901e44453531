"""Raw image sources behind one interface (base.py): CelebA, LSUN, ImageNet, MNIST,
CIFAR-10 and the embedded sample photos.
"""
