"""Embeddings averaged over the wedge-preserving rotations (test-time augmentation)."""

import numpy as np
import pytest
import torch

from cryoshot.data.transforms import FLIPS
from cryoshot.errors import CryoshotError
from cryoshot.fewshot.methods import make_method
from cryoshot.models.embedding import EMBED_ROTATIONS, embed_volumes
from cryoshot.models.loading import load_model

from ..fewshot.helpers import BOX, tiny_checkpoint


def test_rotations_average_the_embeddings_of_the_rotated_volumes(tmp_path):
    model = load_model(tiny_checkpoint(tmp_path / "m.pt", "protonet"))[0]
    vols = np.random.default_rng(0).normal(size=(5, BOX, BOX, BOX)).astype(np.float32)
    vols += 3 * np.exp(-((np.indices((BOX,) * 3) - BOX // 2) ** 2).sum(0) / 8.0)  # a bright centre
    one = [embed_volumes(model, np.ascontiguousarray(np.flip(vols, f)) if f else vols, 10.0, progress=False,
                         rotations=1, precision="fp32") for f in FLIPS]  # fmt: skip
    four = embed_volumes(model, vols, 10.0, progress=False, rotations=4, precision="fp32")
    two = embed_volumes(model, vols, 10.0, progress=False, rotations=2, precision="fp32")
    torch.testing.assert_close(four, torch.stack(one).mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(two, torch.stack(one[:2]).mean(0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(four, one[0])
    # the default applies when a method is not told otherwise
    torch.testing.assert_close(make_method("protonet", model).embed(vols, 10.0, progress=False),
                               embed_volumes(model, vols, 10.0, progress=False, rotations=EMBED_ROTATIONS))  # fmt: skip
    torch.testing.assert_close(make_method("protonet", model, rotations=1).embed(vols, 10.0, progress=False),
                               embed_volumes(model, vols, 10.0, progress=False, rotations=1))  # fmt: skip
    with pytest.raises(CryoshotError, match="rotations must be 1, 2 or 4"):
        embed_volumes(model, vols, 10.0, rotations=3)
