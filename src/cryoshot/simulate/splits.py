"""Which bundled structures models may train on, and which stay novel.

The pre-trained models see at most these 8 bundled maps (plus any number of
procedural pseudo-molecules). The other 8 are never trained on: they are the
novel classes of the demo and the benchmarks. The split mixes sizes and shapes
on both sides (small to large complexes).
"""

TRAIN_STRUCTURES = ("1qvr", "1s3x", "2cg9", "3d2f", "3h84", "4cr2", "4v7r", "5mrc")
NOVEL_STRUCTURES = ("1bxn", "1u6g", "3cf3", "3gl1", "3ipm", "3qm1", "4v4r", "6qzp")
