"""The oneDNN inference copy of the 3D encoder, and the shared-FFT resampling of the rotations."""

import numpy as np
import pytest
import torch

from cryoshot.data.transforms import FLIPS, fourier_resample, resample_flips
from cryoshot.models.embedding import embed_volumes
from cryoshot.models.encoders3d import Encoder3d, encoder_config
from cryoshot.models.fast_cpu import fast_features

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


@pytest.mark.parametrize(("d", "n"), [(40, 24), (41, 24), (33, 17), (24, 24)])
def test_resample_flips_equals_flipping_then_resampling(d, n):
    x = torch.randn(3, d, d, d, generator=torch.Generator().manual_seed(d))
    got = resample_flips(x, n, FLIPS)
    want = torch.stack([fourier_resample(torch.flip(x, f) if f else x, n) for f in FLIPS])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got[0], got[1], atol=1e-2)  # the flips differ: the check can fail


def _encoder(seed: int = 0) -> Encoder3d:
    torch.manual_seed(seed)
    enc = Encoder3d(encoder_config("cryoshot-small"))
    for m in enc.modules():  # running statistics unlike the defaults, so that folding them matters
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return enc.eval()


def _native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere it is emulated."""
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def test_fast_copy_reproduces_the_eager_encoder_in_fp32_and_bf16():
    enc = _encoder()
    x = torch.randn(5, 1, 24, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = enc.features(x)
        got32 = fast_features(enc)(x)
        fast16 = fast_features(enc, bf16=True)
    torch.testing.assert_close(got32, want, atol=1e-4 * want.abs().max().item(), rtol=1e-4)
    if fast16 is None:  # the probe refused the bf16 copy: allowed only where bf16 is emulated (no AVX-512 / AMX)
        assert not _native_bf16(), "the bf16 copy was refused on a CPU with native bf16"
        return
    with torch.no_grad():
        got16 = fast16(x)
    scale = want.abs().max().item()
    assert (got16 - want).abs().max().item() < 3e-2 * scale
    assert (got16 - want).abs().max().item() > 0  # bf16 arithmetic really ran


def test_fast_copy_follows_the_weights_and_never_serves_training():
    enc = _encoder()
    x = torch.randn(2, 1, 24, 24, 24, generator=torch.Generator().manual_seed(2))
    before = fast_features(enc)
    assert fast_features(enc) is before  # cached
    with torch.no_grad():
        enc.blocks[0][0].weight.mul_(-1.0)  # an optimiser step changes parameters in place
        after = fast_features(enc)
        assert after is not before
        torch.testing.assert_close(after(x), enc.features(x), atol=1e-4, rtol=1e-4)
    enc.train()
    assert fast_features(enc) is None


def test_embed_volumes_fast_path_matches_the_eager_path():
    enc = _encoder()
    from cryoshot.models.protonet import ProtoNet

    model = ProtoNet(enc.config, adapter=False).eval()
    model.encoder.load_state_dict(enc.state_dict())
    vols = np.random.default_rng(3).normal(size=(6, 40, 40, 40)).astype(np.float32)
    got = embed_volumes(model, vols, 10.0, progress=False, rotations=4, precision="fp32", contrast="bright")
    with torch.no_grad():
        x = torch.as_tensor(vols)
        want = torch.stack([model.embed(torch.flip(x, f) if f else x) for f in FLIPS]).mean(0)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
