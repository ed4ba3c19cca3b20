"""bitmind: a miner for Bittensor's AI-generated image detection subnet (SN34 design).

The package root stays light: importing ``bitmind`` does not import bittensor or
torch; submodules import what they need.
"""
__version__ = "0.3.0"
