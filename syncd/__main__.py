from syncd.cli import entrypoint

entrypoint()
