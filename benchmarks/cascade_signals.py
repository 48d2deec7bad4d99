"""Which per-query signal flags ProtoNet-CE's mistakes, for the cascade's verification rule? Training structures only.

Per query of 60 seeded 5-way episodes (15 queries) on the 8 training structures (seed 4243,
SNR 0.02 and 0.01): the AUROC with which each signal separates wrong from right answers:
the top-two probability gap (negated), the distance to the nearest prototype, that distance
relative to the support's own nearest-other-class distance, and the entropy.

    .venv/bin/python benchmarks/cascade_signals.py
"""

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from cryoshot.data.episodes import EpisodeSampler
from cryoshot.fewshot.methods import make_method
from cryoshot.models.loading import load_model
from cryoshot.pretrained import resolve_model
from cryoshot.simulate.splits import TRAIN_STRUCTURES
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator

torch.set_num_threads(2)
net, _ = load_model(resolve_model("default"))
m = make_method("protonet-ce", net)
for snr in (0.02, 0.01):
    structs = load_structures(list(TRAIN_STRUCTURES), 10.0, 40)
    b = SubtomogramSimulator(structs, SubtomogramConfig(snr=snr, seed=4243)).simulate(range(40 * len(structs)))
    z = m.embed(b.volumes, 10.0, progress=False)
    for shot in (5, 1):
        sampler = EpisodeSampler(b.labels, 5, shot, 15, seed=2)
        err, sig = [], {"gap": [], "d1": [], "d1_rel": [], "entropy": []}
        for e in range(60):
            ep = sampler.episode(e)
            zs, zq = z[ep.support.ravel()], z[ep.query.ravel()]
            ts = torch.as_tensor(ep.support_targets)
            with torch.no_grad():
                logp, d = m.scores_and_distances(zs, ts, zq, 5)
            p = logp.exp()
            top = p.topk(2, 1).values
            err += list((logp.argmax(1).numpy() != ep.query_targets).astype(int))
            sig["gap"] += list(-(top[:, 0] - top[:, 1]).numpy())
            ds = d.sort(1).values
            sig["d1"] += list(ds[:, 0].numpy())
            # nearest distance relative to the support's own spread (median support-to-own-prototype distance)
            with torch.no_grad():
                ld = m.distances(zs, ts, zs, 5)
            own = ld.sort(1).values[:, 1].median().clamp(min=1e-6)  # support to its nearest other class
            sig["d1_rel"] += list((ds[:, 0] / own).numpy())
            sig["entropy"] += list(-(p * logp).sum(1).numpy())
        err = np.array(err)
        print(
            f"SNR {snr} {shot}-shot: error rate {err.mean():.3f}; AUROC for flagging errors: "
            + ", ".join(f"{k} {roc_auc_score(err, np.array(v)):.3f}" for k, v in sig.items()),
            flush=True,
        )
