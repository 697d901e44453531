"""Plain-Python data stages: sources, sample data, decoding, faces, records.

No Luigi imports here, and no TensorFlow at import time.
"""
