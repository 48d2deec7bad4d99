"""FEAT-style set-to-set embedding adaptation (ProtoNet-CE paper, Eqs. 4-6).

The set ``Q0 = prototypes ∪ queries`` attends to itself:
``alpha = softmax(f(x_q)^T W_Q (W_K f(X)) / sqrt(d))``,
``f*(x_q) = f(x_q) + FC(sum_k alpha_qk W_V f(x_k))``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class SetAttention(nn.Module):
    """Single-head self-attention over a set with a residual connection.

    Forward
    -------
    x : (S, dim) the set (prototypes then queries)
    returns (S, dim) adapted embeddings
    """

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.1):
        super().__init__()
        hidden = hidden or min(dim, 256)
        self.w_q = nn.Linear(dim, hidden, bias=False)
        self.w_k = nn.Linear(dim, hidden, bias=False)
        self.w_v = nn.Linear(dim, hidden, bias=False)
        self.fc = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(hidden)
        nn.init.zeros_(self.fc.weight)  # starts as the identity map: f* = f
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.w_q(x), self.w_k(x), self.w_v(x)
        attn = torch.softmax(q @ k.T * self.scale, dim=-1)
        return x + self.drop(self.fc(attn @ v))
