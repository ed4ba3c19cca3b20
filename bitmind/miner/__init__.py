"""Miner-side library: prediction with hot reload, and the axon handlers."""
