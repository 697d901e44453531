"""What a site's robots.txt allows: urllib.robotparser, with fractional delays."""
from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.robotparser import RobotFileParser


class RobotsRefusal(Exception):
    """robots.txt (or its absence) forbids a URL; ``reason`` is the rejection tag."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class RobotsPolicy:
    """What one origin's robots.txt allows. ``refusal`` set: every URL of the
    origin is refused with that reason (robots.txt unavailable, delay too long)."""
    parser: RobotFileParser | None = None
    delay: float = 0.0
    refusal: str | None = None

    def check(self, url: str, agent: str) -> None:
        """Raise :class:`RobotsRefusal` when ``url`` may not be fetched."""
        if self.refusal:
            raise RobotsRefusal(self.refusal, url)
        if self.parser is not None and not self.parser.can_fetch(agent, url):
            raise RobotsRefusal("robots_disallowed", f"robots.txt disallows {url}")


def parse_robots(text: str, agent: str) -> RobotsPolicy:
    """Parse robots.txt with urllib.robotparser, keeping fractional Crawl-delay.

    robotparser only accepts integer delays, so each Crawl-delay value is
    replaced by its index in a side list before parsing: robotparser still does
    the user-agent group matching, and the index leads back to the real value.
    Request-rate, when stricter, wins.
    """
    delays: list[float] = []
    lines = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "crawl-delay":
            try:
                delay = float(value.split("#")[0].strip())
            except ValueError:
                continue
            if not (math.isfinite(delay) and delay >= 0):
                continue
            line = f"Crawl-delay: {len(delays)}"
            delays.append(delay)
        lines.append(line)
    parser = RobotFileParser()
    parser.parse(lines)
    index = parser.crawl_delay(agent)
    delay = delays[int(index)] if index is not None else 0.0
    rate = parser.request_rate(agent)
    if rate and rate.requests > 0:
        delay = max(delay, rate.seconds / rate.requests)
    return RobotsPolicy(parser=parser, delay=delay)


def disallow_all() -> RobotsPolicy:
    """The policy of a site whose robots.txt answers 401/403: nothing may be fetched."""
    parser = RobotFileParser()
    parser.disallow_all = True
    return RobotsPolicy(parser=parser)
