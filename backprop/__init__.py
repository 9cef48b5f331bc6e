"""Backprop as a product: the `backprop` command, its process supervisor, embedded Redis and a local stack."""
