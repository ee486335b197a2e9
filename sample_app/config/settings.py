"""Settings of the sample relay (a Salmon project; ``salmon start`` reads this, then boot.py)."""

# The receive connectors, permissions, accepted domains, smarthost and queue.
relay_config_file = "config/relay.toml"

# Salmon handlers every accepted message is routed through: the relay handler forwards what the
# policy allowed to the smarthost; the audit handler logs each message with its relay context.
handlers = ["salmon_relayauth.handlers.relay", "app.handlers.audit"]

# A local smarthost storing what it receives, so mail visibly flows with nothing else running.
# Set to None when [smarthost] in relay.toml points at a real mail server.
local_smarthost = {"host": "127.0.0.1", "port": 2526, "maildir": "run/smarthost"}
