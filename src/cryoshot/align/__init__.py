"""Alignment: SO(3) grids, Fourier references, wedge-aware search, averaging, FSC."""
