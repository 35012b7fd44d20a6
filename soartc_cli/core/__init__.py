"""The numeric core: arrays in, arrays out; no files, no printing."""
