"""Strict, thin wrappers over mrcfile and starfile in RELION's conventions."""

from cryoshot.io.mrc import MrcVolume, read_mrc, write_mrc
from cryoshot.io.star import read_star_table, write_star

__all__ = ["MrcVolume", "read_mrc", "write_mrc", "read_star_table", "write_star"]
