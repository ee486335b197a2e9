"""Helpers of ``bench/relay``, the throughput benchmark of the relay against Postfix, Salmon's stock
receiver and bare aiosmtpd (see that script's docstring)."""
