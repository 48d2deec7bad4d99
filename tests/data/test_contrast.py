"""Protein-dark sets are recognised and flipped before a model sees them."""

import numpy as np
import pytest
import torch

from cryoshot.data.transforms import centre_contrast, set_polarity
from cryoshot.errors import CryoshotError
from cryoshot.models.embedding import embed_volumes
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator

from ..fewshot.helpers import tiny_checkpoint


@pytest.mark.parametrize("snr", [0.02, 0.1])
def test_polarity_of_simulated_sets_is_recognised(small_structures, snr):
    cfg = dict(box_px=24, pixel_size_A=16.0, snr=snr, seed=4)
    bright = SubtomogramSimulator(small_structures, SubtomogramConfig(**cfg)).simulate(range(12)).volumes
    dark = SubtomogramSimulator(small_structures, SubtomogramConfig(invert=True, **cfg)).simulate(range(12)).volumes
    assert set_polarity(bright) == 1 and set_polarity(dark) == -1
    assert (centre_contrast(torch.from_numpy(bright)) > 0).float().mean() >= 0.9


def test_dark_sets_embed_as_their_bright_copies(tmp_path, small_structures, capsys):
    from cryoshot.models.loading import load_model

    model = load_model(tiny_checkpoint(tmp_path / "m.pt", "protonet"))[0]
    cfg = dict(box_px=24, pixel_size_A=16.0, snr=0.1, seed=4)
    bright = SubtomogramSimulator(small_structures, SubtomogramConfig(**cfg)).simulate(range(6)).volumes
    z = embed_volumes(model, bright, 16.0, progress=False)
    torch.testing.assert_close(embed_volumes(model, -bright, 16.0, progress=False), z)
    assert "protein-dark" in capsys.readouterr().err
    assert not torch.allclose(embed_volumes(model, -bright, 16.0, progress=False, contrast="bright"), z)
    torch.testing.assert_close(embed_volumes(model, -bright, 16.0, progress=False, contrast="dark"), z)
    with pytest.raises(CryoshotError, match="contrast must be one of"):
        embed_volumes(model, bright, 16.0, contrast="white")
    assert np.isfinite(centre_contrast(torch.zeros(2, 24, 24, 24)).numpy()).all()
