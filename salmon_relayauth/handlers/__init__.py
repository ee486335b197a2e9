"""Salmon handler modules shipped with salmon-relayauth; list them in ``settings.handlers``."""
