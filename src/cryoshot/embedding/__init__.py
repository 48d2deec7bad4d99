"""2D particle embeddings, clustering, automatic k, aligned class averages and the MRA baseline."""
