"""Few-shot particle picking in micrographs (cryoMAE, Xu et al. 2024): stage 1 on exemplars, stage 2 scans."""
