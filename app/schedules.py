"""Cron schedules: a 5-field cron expression in an IANA time zone, and the slots it fires at.

Parsing and slot arithmetic come from croniter (maintained again under pallets-eco since 2025; version 7
is what pyproject.toml pins). cronsim was the other candidate: it copies Debian cron closely, DST quirks
included, but it cannot iterate backwards, and the scheduler needs "the most recent slot at or before
now" to fire a slot missed during downtime. croniter iterates both ways; its DST handling is completed here.

Daylight-saving time follows Debian's (Vixie) cron, as cronsim documents it and `man 8 cron` describes:
- Clocks go forward: a slot at a wall time that does not exist that day fires once, at the instant of the
  change (`30 2 * * *` in Europe/Berlin on the last Sunday of March fires at 03:00 CEST). Slots of a cron
  whose hour field starts with `*` (hourly, every N minutes) simply do not exist in the skipped hour.
- Clocks go back: a cron with a specific hour (the hour field does not start with `*`) fires once in the
  repeated hour, at the first (summer-time) occurrence; a cron whose hour field starts with `*` fires in
  both passes, as its slots are real, distinct instants.
Several slots that fall in one skipped hour (`0,30 2 * * *`) become the one slot at the change.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from app.errors import ValidationFailed

DEFAULT_TIMEZONE = "UTC"
FIELDS = {"cron", "timezone"}
_SEARCH_LIMIT = 8  # second occurrences skipped in a row at most (one repeated hour holds up to 60 slots)


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = DEFAULT_TIMEZONE

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def as_json(self) -> dict[str, str]:
        return {"cron": self.cron, "timezone": self.timezone}

    def _fixed_hour(self) -> bool:
        return not self.cron.split()[1].startswith("*")

    def _repeat(self, slot: datetime) -> bool:
        """Whether `slot` is the second pass of a wall time that clocks going back repeat."""
        local = slot.astimezone(self.zone)
        first = local.replace(fold=0)
        return self._fixed_hour() and local.fold == 1 and first.utcoffset() != local.utcoffset()

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after `moment` (aware), in UTC."""
        cursor = moment
        for _ in range(_SEARCH_LIMIT * 60):
            slot = croniter(self.cron, cursor.astimezone(self.zone)).get_next(datetime).astimezone(timezone.utc)
            if slot <= cursor:  # a skipped hour folded several slots into one instant
                cursor = cursor + timedelta(minutes=1)
                continue
            if not self._repeat(slot):
                return slot
            cursor = slot
        raise ValueError(f"no slot of {self.cron!r} found after {moment.isoformat()}")

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The most recent slot at or before `moment`, in UTC; None if there is none in croniter's range."""
        cursor = moment
        try:
            for _ in range(_SEARCH_LIMIT * 60):
                slot = croniter(self.cron, cursor.astimezone(self.zone)).get_prev(datetime).astimezone(timezone.utc)
                if not self._repeat(slot):
                    break
                cursor = slot
        except CroniterBadDateError:
            return None
        # get_prev never returns `moment` itself: walk forward to the last slot not after it.
        while (later := self.next_after(slot)) <= moment:
            slot = later
        return slot

    def period_at(self, slot: datetime) -> timedelta:
        """The time from `slot` to the one after it: how long a missed slot stays worth firing."""
        return self.next_after(slot) - slot


def scheduled_at(slot: datetime) -> str:
    """A slot as a scheduled execution's payload shows it: RFC 3339 UTC, whole seconds."""
    return slot.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse(value: Any, field: str = "schedule") -> Schedule:
    """Validate a request's `schedule` object; ValidationFailed names `schedule.cron` or `schedule.timezone`."""
    if not isinstance(value, dict):
        raise ValidationFailed(f"{field} must be an object with cron and timezone", field=field)
    unknown = sorted(set(value) - FIELDS)
    if unknown:
        raise ValidationFailed(f"{field}.{unknown[0]} is not a schedule setting", field=f"{field}.{unknown[0]}")
    cron, zone = value.get("cron"), value.get("timezone", DEFAULT_TIMEZONE)
    if not isinstance(cron, str) or len(cron.split()) != 5:
        raise ValidationFailed(f"{field}.cron must be a cron expression of 5 fields (minute hour day month "
                               f"weekday), got {cron!r}", field=f"{field}.cron")
    if not isinstance(zone, str) or not zone:
        raise ValidationFailed(f"{field}.timezone must be an IANA time zone name such as Europe/Berlin, "
                               f"got {zone!r}", field=f"{field}.timezone")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"{field}.timezone must be an IANA time zone name such as Europe/Berlin, "
                               f"got {zone!r}", field=f"{field}.timezone") from None
    schedule = Schedule(cron=" ".join(cron.split()), timezone=zone)
    try:
        croniter(schedule.cron)
        schedule.next_after(datetime.now(timezone.utc))
    except (CroniterBadCronError, CroniterError, ValueError, KeyError) as exc:
        raise ValidationFailed(f"{field}.cron is not a valid cron expression: {cron!r} ({exc})",
                               field=f"{field}.cron") from None
    return schedule


def from_json(value: dict[str, Any]) -> Schedule:
    """A stored schedule (already validated) as a Schedule."""
    return Schedule(cron=value["cron"], timezone=value.get("timezone", DEFAULT_TIMEZONE))


def public(value: dict[str, Any] | None) -> dict[str, str] | None:
    """A stored schedule as the API shows it: cron and timezone."""
    return None if value is None else from_json(value).as_json()


def active_from(value: dict[str, Any]) -> datetime:
    """The instant from which a stored schedule's slots fire (set by `stamp`)."""
    return datetime.fromisoformat(value["active_from"])


def stamp(current: Any, schedule: dict[str, Any] | None, *, enabled: bool, now: datetime) -> dict[str, Any] | None:
    """The schedule to store: `schedule` with `active_from`, the instant from which its slots fire.

    A new schedule, a changed cron or zone, or a workflow enabled again starts at `now`: no slot from
    before the change fires. Any other edit (a name, the config) keeps the running schedule as it was,
    so an edit made just after a slot does not swallow it. `current` is the workflow before the edit."""
    if schedule is None:
        return None
    kept = current is not None and current.enabled and current.schedule is not None and enabled
    if kept and public(current.schedule) == public(schedule):
        return {**public(schedule), "active_from": current.schedule["active_from"]}
    return {**public(schedule), "active_from": now.isoformat()}


def next_run_at(workflow: Any, now: datetime) -> datetime | None:
    """When the workflow's schedule fires next: None unless it is enabled and on a schedule."""
    if not workflow.enabled or workflow.trigger_type != "schedule" or workflow.schedule is None:
        return None
    return from_json(workflow.schedule).next_after(max(now, active_from(workflow.schedule)))
