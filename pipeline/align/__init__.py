"""Face alignment: the aligner (dlib landmarks, OpenFace template), its process-pool
engine, the aligned-shard format and the facegan-align CLI.
"""
