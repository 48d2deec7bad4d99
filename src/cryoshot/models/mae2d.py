"""A small masked autoencoder on 2D windows: the feature extractor of the particle picker (cryoMAE).

The paper (Xu et al. 2024, §3.2) uses ViT-Base-sized MAEs on 224 px crops with 16 px
patches. cryoshot bins each micrograph so that the particle spans
:data:`PARTICLE_PX` pixels and works on windows of :data:`WINDOW_PX` pixels, so a
ViT of 16 tokens (6 px patches) suffices and a whole micrograph is scanned in seconds
on a CPU. The encoder has fixed 2D sine-cosine position embeddings and pre-norm
transformer blocks (torch's fused fast path at inference); the decoder is lighter, as
in He et al. (2022). A window's feature is the mean of its encoder tokens; with
``center_features`` similarities are taken after subtracting the mean feature of the
micrograph's background (random windows), which removes the component every window
shares and adapts the score to each micrograph's imaging.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from cryoshot.errors import CryoshotError

PARTICLE_PX = 16  # particle diameter after binning (pixels)
WINDOW_PX = 24  # window side (pixels): the particle and a ring of context


@dataclass
class MAEConfig:
    """Shape of the picker's MAE (pixels of the binned micrograph)."""

    window_px: int = WINDOW_PX
    particle_px: int = PARTICLE_PX
    patch_px: int = 6
    dim: int = 128
    depth: int = 4
    heads: int = 4
    decoder_dim: int = 64
    decoder_depth: int = 2
    mask_ratio: float = 0.75
    center_features: bool = True

    def validate(self) -> None:
        if self.window_px % self.patch_px:
            raise CryoshotError(f"MAE window {self.window_px} px is not a multiple of the patch {self.patch_px} px")
        if self.dim % self.heads or self.decoder_dim % 4 or self.dim % 4:
            raise CryoshotError("MAE widths must divide by the heads and by 4")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise CryoshotError(f"mask ratio must be in [0, 1), got {self.mask_ratio}")
        if not 4 <= self.particle_px <= self.window_px:
            raise CryoshotError(f"particle size {self.particle_px} px must be in [4, window {self.window_px}]")

    def to_dict(self) -> dict:
        return asdict(self)


def sincos_2d(n: int, dim: int) -> torch.Tensor:
    """(n*n, dim) fixed 2D sine-cosine position embedding (MAE's), rows in raster order."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    parts = []
    for grid in (xx.ravel(), yy.ravel()):
        out = grid[:, None] * omega[None, :]
        parts += [np.sin(out), np.cos(out)]
    return torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))


def _blocks(dim: int, depth: int, heads: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class PickerMAE(nn.Module):
    """Masked autoencoder on (B, 1, W, W) windows; :meth:`features` gives (B, dim) window features."""

    def __init__(self, config: MAEConfig | None = None):
        super().__init__()
        self.config = config = config or MAEConfig()
        config.validate()
        p, n = config.patch_px, config.window_px // config.patch_px
        self.grid = n
        self.patch_embed = nn.Linear(p * p, config.dim)
        self.register_buffer("pos", sincos_2d(n, config.dim)[None], persistent=False)
        self.register_buffer("dec_pos", sincos_2d(n, config.decoder_dim)[None], persistent=False)
        self.encoder = _blocks(config.dim, config.depth, config.heads)
        self.norm = nn.LayerNorm(config.dim)
        self.decoder_embed = nn.Linear(config.dim, config.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_dim))
        self.decoder = _blocks(config.decoder_dim, config.decoder_depth, 4)
        self.decoder_norm = nn.LayerNorm(config.decoder_dim)
        self.decoder_pred = nn.Linear(config.decoder_dim, p * p)
        nn.init.normal_(self.mask_token, std=0.02)

    # ---- shapes -------------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, W, W) -> (B, L, p*p), patches in raster order."""
        p, n = self.config.patch_px, self.grid
        b = x.shape[0]
        return x.reshape(b, n, p, n, p).permute(0, 1, 3, 2, 4).reshape(b, n * n, p * p)

    @staticmethod
    def normalise(x: torch.Tensor) -> torch.Tensor:
        """Each window to zero mean, unit variance (removes the ice gradient and the gain)."""
        mu = x.mean(dim=(-1, -2), keepdim=True)
        sd = x.std(dim=(-1, -2), keepdim=True)
        return (x - mu) / (sd + 1e-5)

    # ---- encoder ------------------------------------------------------------------------
    def encode(
        self, x: torch.Tensor, mask_ratio: float = 0.0, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode windows, optionally keeping a random ``1 - mask_ratio`` of the patches.

        Returns
        -------
        tokens : (B, L_kept, dim)
        keep : (B, L_kept) indices of the kept patches, or None when nothing is masked
        """
        tok = self.patch_embed(self.patchify(self.normalise(x))) + self.pos
        keep = None
        if mask_ratio > 0:
            b, n_tok, _ = tok.shape
            n_keep = max(1, int(round(n_tok * (1 - mask_ratio))))
            noise = torch.rand(b, n_tok, generator=generator, device=tok.device)
            keep = noise.argsort(dim=1)[:, :n_keep]
            tok = torch.gather(tok, 1, keep[..., None].expand(-1, -1, tok.shape[-1]))
        return self.norm(self.encoder(tok)), keep

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, W, W) windows -> (B, dim) features (mean of the unmasked encoder tokens)."""
        return self.encode(x)[0].mean(dim=1)

    # ---- decoder ------------------------------------------------------------------------
    def reconstruction_loss(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MSE on the masked patches of the normalised windows (He et al. 2022).

        Returns
        -------
        loss : scalar tensor
        features : (B, dim) mean of the visible tokens' encodings (E(x̂) of the paper)
        """
        tok, keep = self.encode(x, self.config.mask_ratio, generator)
        target = self.patchify(self.normalise(x))
        b, n_tok, _ = target.shape
        d = self.decoder_embed(tok)
        full = self.mask_token.expand(b, n_tok, -1).clone()
        full.scatter_(1, keep[..., None].expand(-1, -1, d.shape[-1]), d)
        pred = self.decoder_pred(self.decoder_norm(self.decoder(full + self.dec_pos)))
        masked = torch.ones(b, n_tok, device=x.device)
        masked.scatter_(1, keep, 0.0)
        err = ((pred - target) ** 2).mean(dim=-1)
        return (err * masked).sum() / masked.sum(), tok.mean(dim=1)


def load_mae(path) -> tuple[PickerMAE, dict]:
    """A pre-trained MAE (method ``mae``) or a stage-1 picker (method ``picker``), and its checkpoint."""
    from cryoshot.models.checkpoint import load_checkpoint

    ck = load_checkpoint(path, method=("mae", "picker"))
    model = PickerMAE(MAEConfig(**ck["config"]["model"]))
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as exc:
        raise CryoshotError(
            f"{path} does not match the picker MAE of this version: {str(exc).splitlines()[0]}"
        ) from exc
    return model.eval(), ck
