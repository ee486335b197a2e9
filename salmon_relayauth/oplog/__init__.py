"""Operators' logs: Exchange's SMTP receive protocol log and a JSON decision log."""

from .decision_log import DecisionLog
from .protocol_log import ProtocolLog, permission_flags

__all__ = ["DecisionLog", "ProtocolLog", "permission_flags"]
