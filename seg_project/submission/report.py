"""What the submission checker found (:class:`SubmissionReport`), and that as readable text."""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

__all__ = ["SubmissionReport", "format_report"]


@dataclass
class SubmissionReport:
    """What :func:`check_submission` found.

    Attributes:
        source: the file checked, or ``"<entries>"``.
        num_entries: entries in the submission.
        errors: problems the grader would choke on or that make the result wrong; each
            names the entry index and image id.
        warnings: suspicious but acceptable things (empty masks, ignored keys, ...).
        entries_per_image: entries per mapped image id (0 for images without any).
        entries_per_class: entries per category id 1..K.
        images_without_entries: mapped image ids with no entry.
        bbox_format: ``"xywh"`` or ``"xyxy"``: the format used to check boxes.
        bbox_format_note: how it was chosen and how many masks fit each format.
    """

    source: str
    num_entries: int = 0
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    entries_per_image: Dict[int, int] = field(default_factory=dict)
    entries_per_class: Dict[int, int] = field(default_factory=dict)
    images_without_entries: List[int] = field(default_factory=list)
    bbox_format: Optional[str] = None
    bbox_format_note: str = ""

    @property
    def ok(self) -> bool:
        """True when the submission has no errors."""
        return not self.errors


def _listing(title: str, lines: Sequence[str], limit: int) -> List[str]:
    if not lines:
        return []
    out = [f"{title} ({len(lines)}):"] + [f"  - {line}" for line in lines[:limit]]
    if len(lines) > limit:
        out.append(f"  ... and {len(lines) - limit} more")
    return out


def _wrapped(items: Sequence[str], per_line: int = 10, limit: int = 120) -> List[str]:
    lines = ["  " + "  ".join(items[i:i + per_line])
             for i in range(0, min(len(items), limit), per_line)]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more")
    return lines


def format_report(report: SubmissionReport, max_listed: int = 20) -> str:
    """A readable summary: verdict, errors, warnings, then counts per class and image.

    Args:
        report: what :func:`check_submission` returned.
        max_listed: how many errors and warnings to list before "... and N more".
    """
    num_errors = len(report.errors)
    verdict = "VALID" if report.ok else f"INVALID ({num_errors} error{'s' * (num_errors > 1)})"
    per_image = report.entries_per_image
    with_entries = sum(1 for n in per_image.values() if n)
    lines = [
        f"Submission {report.source}: {verdict}",
        f"entries: {report.num_entries} for {with_entries} of {len(per_image)} images",
    ]
    if report.bbox_format:
        lines.append(f"bbox format: {report.bbox_format} ({report.bbox_format_note})")
    lines += _listing("errors", report.errors, max_listed)
    lines += _listing("warnings", report.warnings, max_listed)
    if report.entries_per_class:
        lines.append("entries per class: " + ", ".join(
            f"{c}: {n}" for c, n in report.entries_per_class.items()))
    if per_image:
        counts = sorted(per_image.values())
        lines.append(f"entries per image (min {counts[0]}, median {counts[len(counts) // 2]}, "
                     f"max {counts[-1]}), image_id:count:")
        lines += _wrapped([f"{i}:{n}" for i, n in per_image.items()])
    return "\n".join(lines)
