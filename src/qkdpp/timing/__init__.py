"""Timing: clock offset/drift recovery, detector delays, slot assignment, BBM92 coincidences.

Entry point for the driver: :func:`recover` (Bob's :class:`~qkdpp.io.events.EventChunk` +
Alice's :class:`~qkdpp.io.records.AliceRecord` + channel map → :class:`BobDetections`);
:func:`recover_full` also returns the :class:`ClockFit` (offset, drift, delays) and
:class:`SlotStats` (fraction gated out).
"""

from qkdpp.timing.channel_map import channel_tables, map_channels, parse_channel_map
from qkdpp.timing.coincidences import find_coincidences, self_clock
from qkdpp.timing.recover import (
    ClockFit,
    SlotStats,
    TimingError,
    assign_slots,
    event_slots,
    fit_clock,
    pilot_from_record,
    recover,
    recover_full,
)

__all__ = [
    "ClockFit",
    "SlotStats",
    "TimingError",
    "assign_slots",
    "channel_tables",
    "event_slots",
    "find_coincidences",
    "fit_clock",
    "map_channels",
    "parse_channel_map",
    "pilot_from_record",
    "recover",
    "recover_full",
    "self_clock",
]
