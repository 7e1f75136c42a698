"""The carrier node daemon and its parts (see :mod:`carrier_node.daemon.node`)."""

from carrier_node.daemon.answering import AnswerTiming
from carrier_node.daemon.connection import WireTap, channel_options
from carrier_node.daemon.node import NODE_VERSION, NodeDaemon
from fedoversight.errors import REVIEWER_REJECTED

__all__ = [
    "NODE_VERSION",
    "REVIEWER_REJECTED",
    "AnswerTiming",
    "NodeDaemon",
    "WireTap",
    "channel_options",
]
