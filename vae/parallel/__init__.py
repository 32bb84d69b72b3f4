"""Several devices and several processes: the 1-D ("data",) mesh, each process's shards of
the training split, and what processes agree on (`multihost`)."""
