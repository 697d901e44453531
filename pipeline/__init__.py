"""Plain-Python data stages, grouped by role. No Luigi imports, no TensorFlow at import time.

    net/        the one HTTP client, the address guard, downloads, archives
    crawl/      the crawler, its frontier, robots.txt, links
    sources/    one Source interface (base.py); CelebA, LSUN, ImageNet, MNIST, CIFAR-10, samples
    align/      the aligner, its process-pool engine, the aligned-shard format, facegan-align
    records.py, atomic.py, imaging.py, jsonl.py, versions.py, settings.py: records, atomic
                writers, the one image decoder, JSON lines, the version hash, setting rules
"""
