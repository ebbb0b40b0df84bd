"""The group coordinator: consumer groups of the classic and the KIP-848 protocols, and
committed offsets, all persisted as records of ``__consumer_offsets``."""
