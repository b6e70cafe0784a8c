"""Event bus: the Protocol (base.py), the embedded SQLite log and Apache Kafka."""

from trailmark.bus.base import BusError, BusUnavailable, Consumer, EventBus, Message, Producer

__all__ = ["BusError", "BusUnavailable", "Consumer", "EventBus", "Message", "Producer"]
