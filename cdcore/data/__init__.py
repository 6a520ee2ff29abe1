"""Data sets: generators, loaders and the HDF5 schema every stage reads."""
