"""The dataset checker's checks of the image files: that each exists, its header (size,
colour mode, EXIF orientation) and, in the full check, that its pixels decode.

What each problem means is in :mod:`detr_irpe.data.checker.messages`; the policy in
:mod:`detr_irpe.data.checker.checks`.
"""

from __future__ import annotations

import warnings
from collections import Counter

from PIL import Image, UnidentifiedImageError

from detr_irpe.data.checker.messages import INFO, SKIPPED, Kind, conversion_kind, full_check_command
from detr_irpe.data.checker.report import DatasetReport, Findings, Issue, image_label, plural, short
from detr_irpe.data.image_source import FolderImageSource, ZipImageSource

EXIF_ORIENTATION = 0x0112
# Header of one image file: ((width, height), Pillow mode, EXIF orientation or None).
Header = tuple[tuple[int, int], str, int | None]


class FileChecks:
    """The checks of the files of one dataset's images."""

    def __init__(
        self,
        report: DatasetReport,
        found: Findings,
        source: FolderImageSource | ZipImageSource,
        quick: bool,
        skip_unreadable: bool,
        max_headers: int | None,
    ):
        self.report = report
        self.found = found
        self.source = source
        self.quick = quick
        self.skip_unreadable = skip_unreadable
        self.max_headers = max_headers
        self.conversions: dict[str, tuple[str, Kind]] = {}

    def run(self, images: dict[int, dict], per_image: Counter) -> dict[int, tuple[int, int]]:
        """Check existence (all), headers (all or a sample), decoding (full mode); return the
        real (width, height) of every image whose header was read and that is not skipped."""
        candidates = [(i, image) for i, image in images.items() if not image.get("unsafe")]
        sampled = self._sample(candidates)
        bad: dict[str, list[int]] = {}
        sizes = {}
        exists = self.source.contains_many([image["file_name"] for _, image in candidates])
        for (image_id, image), present in zip(candidates, exists):
            if present and image_id not in sampled:
                continue
            problem, size = self._check_file(image_id, image, present)
            if size is not None:
                sizes[image_id] = size
            if problem is not None:
                bad.setdefault(problem, []).append(image_id)
        if self.skip_unreadable:
            self._skip(bad, per_image, sizes)
        self._quick_notes(len(sampled), len(candidates))
        return sizes

    def _sample(self, candidates: list[tuple[int, dict]]) -> set[int]:
        """The ids of the images whose headers are read: all, or in quick mode at most
        ``max_headers`` evenly spaced ones."""
        n = len(candidates)
        if self.quick and self.max_headers is not None and n > self.max_headers:
            k = self.max_headers
            return {candidates[j * n // k][0] for j in range(k)}
        return {i for i, _ in candidates}

    def _check_file(self, image_id: int, image: dict, present: bool) -> tuple[str | None, tuple | None]:
        """``(problem, size)`` of one image file: the problem code that makes it unusable (or
        None) and its real (width, height) when its header was read."""
        label = image_label(image_id, image["file_name"])
        problem, detail, size = "image_missing", "", None
        if present:
            problem, detail, header = self._read(image["file_name"])
            if header is not None:
                self.report.headers_read += 1
                size = header[0]
                self._check_header(label, image, header, usable=problem is None)
        if problem is not None:
            self.found.add(problem, label + (f" ({detail})" if detail else ""))
        return problem, size

    def _check_header(self, label: str, image: dict, header: Header, usable: bool) -> None:
        """Count the colour conversion (of a ``usable`` file), the EXIF orientation and a
        size that differs from the JSON's."""
        (width, height), mode, orientation = header
        if mode != "RGB" and usable:
            code, kind = self.conversions.setdefault(mode, conversion_kind(mode))
            self.found.kinds.setdefault(code, kind)
            self.found.add(code, label)
        if orientation not in (None, 1):
            self.found.add("exif_rotated", f"{label} (orientation {orientation})")
        if (width, height) != (image["width"], image["height"]):
            swapped = (height, width) == (image["width"], image["height"])
            note = (
                "; swapped, as if the JSON describes the EXIF-rotated view"
                if swapped and orientation in (5, 6, 7, 8)
                else ""
            )
            self.found.add(
                "size_mismatch",
                f"{label}: file {width}x{height}, JSON "
                f"{image['width']}x{image['height']} (width x height){note}",
            )

    def _read(self, name: str) -> tuple[str | None, str, Header | None]:
        """``(problem, detail, header)`` for one image file; ``header`` is
        ``((width, height), mode, exif_orientation)`` when the header could be read."""
        header = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with self.source.open_raw(name, header_only=self.quick) as image:
                    header = (image.size, image.mode, _orientation(image))
                    if not self.quick:
                        image.load()
        except FileNotFoundError:
            return "image_missing", "", None
        except UnidentifiedImageError:
            return "image_not_an_image", "", None
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
            problem = "image_unreadable" if header is None else "image_truncated"
            return problem, short(str(err), 80).strip("'\""), header
        return None, "", header

    def _skip(self, bad: dict[str, list[int]], per_image: Counter, sizes: dict) -> None:
        """Move the unusable files from errors to skipped, with their annotations."""
        for code, ids in bad.items():
            lost = sum(per_image[i] for i in ids)
            self.found.moved[code] = SKIPPED
            self.found.advice[code] = (
                f"Left out of the dataset together with {plural(lost, 'annotation')} "
                "(skip_unreadable); restore the files to use them"
            )
            self.report.skipped_image_ids.extend(ids)
            self.report.skipped_annotations += lost
            for image_id in ids:
                sizes.pop(image_id, None)
        self.report.skipped_image_ids.sort()

    def _quick_notes(self, sampled: int, n: int) -> None:
        """The notes saying what the quick check did not look at."""
        command = full_check_command(self.report.ann_file, self.report.images)
        if sampled < n:
            self._note(
                "quick_sample",
                f"quick check: headers read for an evenly spaced sample of {sampled} of {n} images "
                "(size, colour mode, EXIF); all files checked to exist",
                sampled,
                f"Colour-mode counts cover the sample only; check every image with `{command}`",
            )
        if self.quick and n:
            self._note(
                "quick_headers_only",
                "quick check: image headers read, pixels not decoded",
                1,
                f"Truncated files are only found by the full check, `{command}`",
            )

    def _note(self, code: str, text: str, count: int, advice: str) -> None:
        issue = Issue(code, INFO, self.report.images, text, count, examples=[], advice=advice)
        self.found.extra.append(issue)


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block does not make the image unusable
        return None
