"""What `flows verify` found, and the report a person reads.

The checks themselves live beside this module: projections/verify/log_walk.py walks the log (missing
sequences, each flow's continuity, the tamper-evidence chain, malformed events) and
projections/verify/model_diff.py compares the live read model with a replay of the log. Each
problem is a Finding that names the event (position, flow, type), says what is wrong and what
to do; notes are facts worth knowing that are not failures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Finding", "VerifyReport", "render_report"]


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # short and stable, for tools: "missing-sequence", "chain-broken", ...
    problem: str  # what is wrong, in words
    action: str  # what to do about it
    position: int | None = None  # the log position (stream sequence) it is about
    flow_id: str | None = None
    event_type: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "position": self.position,
            "flow_id": self.flow_id,
            "type": self.event_type,
            "problem": self.problem,
            "action": self.action,
        }


@dataclass(slots=True)
class VerifyReport:
    stream: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    messages: int = 0  # log messages read (events, name markers, stored replies)
    events: int = 0
    flows: int = 0
    last_position: int = 0  # the stream's last sequence when verify read it
    checkpoint: int = 0  # the live read model's position, where the comparison was made
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s else 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "stream": self.stream,
            "messages": self.messages,
            "events": self.events,
            "flows": self.flows,
            "last_position": self.last_position,
            "checkpoint": self.checkpoint,
            "elapsed_s": round(self.elapsed_s, 3),
            "findings": [finding.as_json() for finding in self.findings],
            "notes": self.notes,
        }


def render_report(report: VerifyReport) -> str:
    scope = (
        f"stream {report.stream}: {report.messages} messages up to position "
        f"{report.last_position} ({report.events} events of {report.flows} flows); live read "
        f"model compared at position {report.checkpoint}; {report.elapsed_s:.2f}s "
        f"({report.events_per_s:.0f} events/s)"
    )
    lines: list[str] = []
    if report.ok:
        lines.append(f"flows verify: OK. {scope}")
    else:
        kinds = Counter(finding.kind for finding in report.findings)
        summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        lines.append(f"flows verify: FAILED with {len(report.findings)} problems ({summary}).")
        lines.append(scope)
        said: dict[str, int] = {}  # each action in full once, then by reference
        for number, finding in enumerate(report.findings, start=1):
            lines.append("")
            lines.append(f"{number}. [{finding.kind}] {_subject_of(finding)}")
            lines.append(f"   wrong: {finding.problem}")
            earlier = said.setdefault(finding.action, number)
            action = finding.action if earlier == number else f"as for {earlier}. above"
            lines.append(f"   to do: {action}")
    if report.notes:
        lines.append("")
        lines.extend(f"note: {note}" for note in report.notes)
    return "\n".join(lines)


def _subject_of(finding: Finding) -> str:
    parts = []
    if finding.position is not None:
        parts.append(f"position {finding.position}")
    if finding.flow_id is not None:
        parts.append(f"flow {finding.flow_id}")
    if finding.event_type is not None:
        parts.append(finding.event_type)
    return ", ".join(parts) or "the read model"
