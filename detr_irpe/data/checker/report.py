"""The dataset checker's report: the problems found, counted, and their text.

:class:`Findings` collects counts and first examples per problem code while checking;
:class:`DatasetReport` holds them sorted into sections as :class:`Issue` objects and writes
the summary and the one line printed at load time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from detr_irpe.data.checker.messages import (
    ERROR,
    INFO,
    KINDS,
    ON_JSON,
    REPAIR,
    SKIPPED,
    Kind,
    full_check_command,
)

MAX_EXAMPLES = 5


@dataclass
class Issue:
    """One kind of problem: ``count`` occurrences, the first few described in ``examples``."""

    code: str
    section: str  # "error", "skipped", "repair" or "info"
    where: str  # the annotation file or the image folder/zip
    text: str  # the count and the problem, e.g. "3 boxes clipped to the image"
    count: int
    examples: list[str]
    advice: str

    def line(self) -> str:
        shown = ""
        if self.examples:
            more = ", ..." if self.count > len(self.examples) else ""
            shown = ": " + ", ".join(self.examples) + more
        return f"{self.where}: {self.text}{shown}. {self.advice}."


class DatasetError(ValueError):
    """A dataset with errors that cannot be repaired; the message is the report's summary."""

    def __init__(self, report: DatasetReport, message: str | None = None):
        super().__init__(f"{message}\n{report.summary()}" if message else report.summary())
        self.report = report


@dataclass
class DatasetReport:
    """What :func:`~detr_irpe.data.checker.checks.check_dataset` found (see that module for the policy)."""

    ann_file: str
    images: str
    quick: bool
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0
    headers_read: int = 0  # image files opened (all of them, or a sample in quick mode)
    errors: list[Issue] = field(default_factory=list)
    skipped: list[Issue] = field(default_factory=list)
    repairs: list[Issue] = field(default_factory=list)
    info: list[Issue] = field(default_factory=list)
    skipped_image_ids: list[int] = field(default_factory=list)
    skipped_annotations: int = 0

    @property
    def ok(self) -> bool:
        """No errors: the dataset can be loaded (with its repairs and skipped images)."""
        return not self.errors

    def count(self, code: str) -> int:
        """How many times the problem ``code`` (e.g. ``"box_clipped"``) was found."""
        issues = self.errors + self.skipped + self.repairs + self.info
        return sum(issue.count for issue in issues if issue.code == code)

    def summary(self) -> str:
        """Multi-line text: one line per problem with its count, file, first ids and fix."""
        mode = "quick check" if self.quick else "full check"
        lines = [
            f"Dataset check ({mode}) of {self.ann_file} with images from {self.images}: "
            f"{plural(self.num_images, 'image')}, {plural(self.num_annotations, 'annotation')}, "
            f"{plural(self.num_categories, 'category', 'categories')}."
        ]
        sections = (
            ("ERRORS (training cannot start until they are fixed):", self.errors),
            ("SKIPPED (skip_unreadable):", self.skipped),
            ("REPAIRED at load time:", self.repairs),
            ("NOTES:", self.info),
        )
        for title, issues in sections:
            if issues:
                lines.append(title)
                lines.extend("  " + issue.line() for issue in issues)
        if self.errors:
            again = full_check_command(self.ann_file, self.images)
            lines.append(
                f"RESULT: NOT OK, {plural(len(self.errors), 'kind of error', 'kinds of error')} "
                f"above: fix the data and check again with `{again}`."
            )
        else:
            lines.append("RESULT: OK" + (f" ({self.repair_line()})" if self.repair_line() else ""))
        return "\n".join(lines)

    def repair_line(self) -> str:
        """One line saying what loading changes (repairs, skipped images); "" if nothing."""
        parts = []
        if self.repairs:
            parts.append("repaired " + ", ".join(issue.text for issue in self.repairs))
        if self.skipped_image_ids:
            ids = ", ".join(str(i) for i in self.skipped_image_ids[:MAX_EXAMPLES])
            more = ", ..." if len(self.skipped_image_ids) > MAX_EXAMPLES else ""
            parts.append(
                f"skipped {plural(len(self.skipped_image_ids), 'unreadable image')} "
                f"(ids {ids}{more}) with "
                f"{plural(self.skipped_annotations, 'annotation')}"
            )
        return f"{self.ann_file}: {'; '.join(parts)}" if parts else ""

    def raise_if_errors(self) -> None:
        """Raise :class:`DatasetError` (message: :meth:`summary`) if there are errors."""
        if self.errors:
            raise DatasetError(self)


class Findings:
    """Counts and first examples per problem code; turned into :class:`Issue` objects."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.kinds: dict[str, Kind] = dict(KINDS)
        self.moved: dict[str, str] = {}  # code -> section, for skipped image errors
        self.advice: dict[str, str] = {}  # code -> advice replacing the kind's
        self.extra: list[Issue] = []

    def add(self, code: str, example: str | Callable[[], str] | None = None, count: int = 1) -> None:
        """Count ``code``; keep ``example`` (or call it, in hot loops) if fewer than 5 are."""
        self.counts[code] += count
        shown = self.examples.setdefault(code, [])
        if example is not None and len(shown) < MAX_EXAMPLES:
            shown.append(example() if callable(example) else example)

    def issues(self, ann_file: str, images: str, section: str) -> list[Issue]:
        """The problems of ``section`` found, in the catalogue's order, then the extra ones."""
        result = []
        for code, kind in self.kinds.items():
            count = self.counts.get(code, 0)
            if not count or self.moved.get(code, kind.section) != section:
                continue
            result.append(
                Issue(
                    code=code,
                    section=section,
                    where=ann_file if kind.on == ON_JSON else images,
                    text=f"{count} {kind.singular if count == 1 else kind.plural}",
                    count=count,
                    examples=self.examples.get(code, []),
                    advice=self.advice.get(code, kind.advice),
                )
            )
        return result + [issue for issue in self.extra if issue.section == section]

    def sort_into(self, report: DatasetReport) -> None:
        """Fill the report's four sections with what was found."""
        where = (report.ann_file, report.images)
        report.errors = self.issues(*where, ERROR)
        report.skipped = self.issues(*where, SKIPPED)
        report.repairs = self.issues(*where, REPAIR)
        report.info = self.issues(*where, INFO)


def plural(count: int, singular: str, many: str | None = None) -> str:
    """``count`` and the noun, e.g. "1 image", "3 images", "2 categories"."""
    return f"{count} {singular if count == 1 else (many or singular + 's')}"


def image_label(image_id: int, file_name: str) -> str:
    """How an image is named in examples: ``image 3 'img3.png'``."""
    return f"image {image_id} {file_name!r}"


def annotation_label(ann_id: int, image_id: int) -> str:
    """How an annotation is named in examples: ``annotation 103 (image 3)``."""
    return f"annotation {ann_id} (image {image_id})"


def short(value, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters, for quoting bad values in messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
