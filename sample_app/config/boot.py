"""Boot the sample relay: logging, Salmon's Router, the local smarthost and the relay receiver."""

import logging
import os

from salmon.routing import Router

from salmon_relayauth import RelayReceiver
from salmon_relayauth.sink import MaildirSink

from . import settings

os.makedirs("logs", exist_ok=True)
os.makedirs("run", exist_ok=True)
logging.basicConfig(
    filename="logs/relay.log",
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)

logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command line at INFO

Router.load(settings.handlers)

if settings.local_smarthost:
    smarthost = MaildirSink(
        settings.local_smarthost["maildir"], settings.local_smarthost["host"], settings.local_smarthost["port"]
    )
    smarthost.start()

# `salmon start` calls settings.receiver.start()
settings.receiver = RelayReceiver(settings.relay_config_file)
