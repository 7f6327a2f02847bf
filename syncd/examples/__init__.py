"""Example workflows shipped with syncd. Enable one with ``SYNCD_WORKFLOWS=syncd.examples.<module>``."""
