"""Read and validate labelled text files (CSV, TSV, JSONL, OpenAI chat JSONL, Parquet)."""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from tuneforge.errors import InputError, Problem


@dataclass
class Table:
    """Labelled texts read from one file (or a subset of one, after splitting).

    Attributes:
        source: The file name as the user gave it (used in messages and the fingerprint).
        texts: One text per record.
        labels: One tuple of label strings per record; single-label records have exactly one.
        lines: 1-based line number of each record in the file (row number for Parquet).
        sha256: Hex sha256 of the whole file's bytes.
        format: One of "csv", "tsv", "jsonl", "chat", "parquet".
        multi_label: Whether records may carry several labels.
    """

    source: str
    texts: list[str]
    labels: list[tuple[str, ...]]
    lines: list[int]
    sha256: str
    format: str
    multi_label: bool = False

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> Table:
        """Return a new Table with the records at ``indices`` (in that order)."""
        return Table(
            source=self.source,
            texts=[self.texts[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            lines=[self.lines[i] for i in indices],
            sha256=self.sha256,
            format=self.format,
            multi_label=self.multi_label,
        )


# ---------------------------------------------------------------- public API

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
"""File extension -> format read by ``read_table`` (``.json`` is read as JSON lines)."""

TEXT_COLUMNS = ("text", "sentence", "content", "review", "utterance", "query", "document")
"""Text column names tried in order (case-insensitively) when none is given."""

LABEL_COLUMNS = ("label", "labels", "intent", "category", "class", "sentiment", "target")
"""Label column names tried in order (case-insensitively) when none is given."""

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF8_FIX = "re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`"
_UTF16_FIX = "re-save the file as UTF-8, e.g. `iconv -f utf-16 -t utf-8 in.csv > out.csv`"
_QUOTE_FIX = (
    "wrap a field that holds the delimiter, a quote or a line break in double quotes, and double "
    'every quote inside it (e.g. "She said ""hi""")'
)
_RAGGED_FIX = (
    "look for a missing or extra delimiter in the row; wrap fields that hold the delimiter or a "
    "line break in double quotes"
)
_JSONL_FIX = 'write one JSON object per line, e.g. {"text": "great film", "label": "positive"}'
_MAX_LISTED = 20
SURROGATE_FIX = (
    "remove the character: a lone UTF-16 surrogate is not text (a \\uXXXX escape of a "
    "character outside the BMP needs its pair, e.g. \\ud83d\\ude00)"
)
_NESTED_FIX = "a record holds a text and a label: flatten the nested arrays or objects"
_PARQUET_BATCH_ROWS = 65_536


# What reading a file may take in memory, estimated before parsing it (``max_memory``). Not
# exact, but above what was measured, so that a file cannot amplify past the cap:
_ROW_MEMORY = 400  # per row: 2,000,000 short CSV rows took ~360 bytes a row
# per object a file's syntax can create (a CSV field, a JSON value): an empty JSON list or
# object is 56-64 bytes plus its 8-byte slot, from 3 bytes of input ("[],")
_OBJECT_MEMORY = 72
_BYTES_MEMORY = 3  # per byte of data: the bytes, the decoded strings (a 101 MB CSV: 2.5x)


class TableTooLarge(InputError):
    """A file over a cap of ``read_table``: more rows than ``max_rows``, more bytes of data
    once decompressed than ``max_bytes``, or an estimate of the memory reading it takes over
    ``max_memory``.

    Attributes:
        limit: ``"rows"``, ``"bytes"`` or ``"memory"``: which cap the file exceeds.
        cap: The cap.
        found: How many rows or bytes the file holds (or the memory estimate), or None where
            reading stopped at the cap.
    """

    def __init__(self, source: str, limit: str, cap: int, found: int | None) -> None:
        self.limit = limit
        self.cap = cap
        self.found = found
        held = f"{found:,}" if found is not None else f"more than {cap:,}"
        if limit == "memory":
            message = f"reading the file would take about {held} bytes of memory"
        else:
            what = "rows" if limit == "rows" else "bytes of data once decompressed"
            message = f"the file holds {held} {what}"
        message += f"; the limit is {cap:,}"
        fix = "split the file, or keep a sample of its rows"
        super().__init__(f"{source}: {message}", [Problem(source, message, fix)])


def read_table(
    path: str | Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    multi_label: bool = False,
    label_separator: str = "|",
    max_problems: int = 50,
    max_rows: int | None = None,
    max_bytes: int | None = None,
    max_memory: int | None = None,
) -> Table:
    """Read and validate one labelled file.

    The format follows the extension: ``.csv``, ``.tsv``, ``.jsonl``/``.json`` (one JSON
    object per line; OpenAI chat JSONL when the first record has ``"messages"``) and
    ``.parquet``. Every problem found is collected (up to ``max_problems``) and reported
    at once.

    Args:
        path: The file, as the user named it.
        text_column: Column (or JSON key) holding the texts; detected when None.
        label_column: Column (or JSON key) holding the labels; detected when None.
        multi_label: Records may carry several labels: a JSON or Parquet list, or a string
            (CSV cell, JSON string, chat answer) split on ``label_separator``.
        label_separator: Separator of several labels in one string (multi-label only).
        max_problems: How many problems to list before summarising the rest.
        max_rows: Refuse a file with more rows: lines of a CSV/TSV (below the header) or JSONL
            file, rows of a Parquet file. Checked before the rows are parsed.
        max_bytes: Refuse a file whose data takes more bytes once decompressed: a text file's
            size; the text and label columns of a Parquet file as decoded (strings plain,
            not dictionary-encoded), measured from its footer and then batch by batch
            before the file is read.
        max_memory: Refuse a file that reading may take more memory for, estimated before
            parsing from its rows, its size and the objects its syntax can create (CSV
            delimiters; JSON commas, brackets and braces; Parquet values from its footer).

    Returns:
        The texts, label tuples and line numbers of every record.

    Raises:
        TableTooLarge: The file exceeds ``max_rows``, ``max_bytes`` or ``max_memory``.
        InputError: The file is missing, unreadable or invalid; ``problems`` lists each
            problem with its line (row for Parquet), column and fix.
    """
    spec = _Spec(text_column, label_column, multi_label, label_separator, need_label=True)
    return _read(path, spec, max_problems, _Caps(max_rows, max_bytes, max_memory))


def read_texts(path: str | Path, text_column: str | None = None) -> list[str]:
    """Read the texts of a file, labelled or not (for prediction).

    A ``.txt`` file holds one text per non-blank line; any format ``read_table`` reads
    gives its text column (chat JSONL: the user turns).

    Args:
        path: The file.
        text_column: Column holding the texts; detected when None.

    Returns:
        The stripped texts, in file order.

    Raises:
        InputError: The file is missing, unreadable or invalid.
    """
    if Path(path).suffix.lower() == ".txt":
        return _read_txt(path)
    spec = _Spec(text_column, None, False, "|", need_label=False)
    return _read(path, spec, 50, _Caps(None, None, None)).texts


@dataclass
class JsonLines:
    """The JSON objects of a JSON-lines file, read with ``read_json_lines``.

    Attributes:
        source: The file name as the user gave it.
        objects: ``(line, object)`` of every line that holds a JSON object (1-based lines).
        sha256: Hex sha256 of the whole file's bytes.
        problems: The problems found so far (bad bytes, bad JSON, lines that are not
            objects); the caller adds its own and calls ``raise_if_any``.
    """

    source: str
    objects: list[tuple[int, dict]]
    sha256: str
    problems: FileProblems


def read_json_lines(
    path: str | Path,
    *,
    example: str,
    nested_fix: str,
    max_problems: int = 50,
    max_rows: int | None = None,
    max_bytes: int | None = None,
    max_memory: int | None = None,
) -> JsonLines:
    """Read a ``.jsonl``/``.json`` file into its objects, safely, as ``read_table`` does.

    The same checks as ``read_table``: a missing path or a directory, the caps (checked
    before a line is parsed), an empty file, bytes that are not UTF-8, NUL bytes, lines that
    are not JSON, nested too deeply to read (a ``RecursionError``), or not an object. Blank
    lines are skipped. Problems on lines are collected, not raised.

    Args:
        path: The file, as the user named it.
        example: One valid line of the format, shown in the fixes.
        nested_fix: The fix shown for a line nested too deeply to read.
        max_problems: How many problems to list before summarising the rest.
        max_rows: Refuse a file with more lines.
        max_bytes: Refuse a larger file.
        max_memory: Refuse a file that reading may take more memory for (estimated from its
            size, lines and JSON punctuation, as ``read_table`` does).

    Returns:
        The objects with their lines, the file's sha256 and the problems found.

    Raises:
        TableTooLarge: The file exceeds a cap.
        InputError: The file is missing, unreadable, empty or not a ``.jsonl``/``.json``
            file (problems on lines are returned, not raised).
    """
    source = str(path)
    _check_path(source)
    suffix = Path(source).suffix.lower()
    if suffix not in (".jsonl", ".json"):
        _fail(
            source,
            f"unsupported file extension {suffix or '(none)'!r}; this file must be JSON lines "
            "(.jsonl)",
            f"write one JSON object per line, e.g. {example}, in a .jsonl file",
        )
    caps = _Caps(max_rows, max_bytes, max_memory)
    if caps.bytes is not None:
        size = _size(source)
        if size > caps.bytes:
            raise TableTooLarge(source, "bytes", caps.bytes, size)
    data = _read_bytes(source)
    if not data.removeprefix(_UTF8_BOM).strip():
        _fail(source, "the file is empty", f"write one JSON object per line, e.g. {example}")
    _check_text_caps(source, "jsonl", data, caps)
    problems = FileProblems(source, max_problems)
    sha256 = hashlib.sha256(data).hexdigest()
    text = _decode(data, problems)
    if text is None or _has_nul(text, problems):
        return JsonLines(source, [], sha256, problems)
    del text  # parsed from the bytes a line at a time
    jsonl_fix = f"write one JSON object per line, e.g. {example}"
    lines = _text_lines(data, "\n")
    objects = list(_json_objects(lines, problems, jsonl_fix, nested_fix))
    return JsonLines(source, objects, sha256, problems)


# ---------------------------------------------------------------- plumbing


@dataclass(frozen=True)
class _Spec:
    """What to read from a file (the options of ``read_table``)."""

    text_column: str | None
    label_column: str | None
    multi_label: bool
    separator: str
    need_label: bool


@dataclass(frozen=True)
class _Caps:
    """Limits on what a file may hold (None: no limit)."""

    rows: int | None
    bytes: int | None
    memory: int | None


class _Raw(NamedTuple):
    """One record before validation: its line and its raw text and label values."""

    line: int
    text: Any
    label: Any


@dataclass(frozen=True)
class _Columns:
    """The resolved text and label columns (None when not found or not needed)."""

    text: str | None
    label: str | None


@dataclass
class _Parsed:
    """A file's raw records, its final format name and the columns they came from."""

    format: str
    records: list[_Raw]
    columns: _Columns


_NO_COLUMNS = _Columns(None, None)


class FileProblems:
    """Collects the problems of one file, keeping the ``limit`` with the lowest line numbers.

    Args:
        source: The file, as the user named it.
        limit: How many problems to list before summarising the rest.
    """

    def __init__(self, source: str, limit: int) -> None:
        self.source = source
        self.limit = max(1, limit)
        self.kept: list[Problem] = []
        self.total = 0

    def add(self, message: str, fix: str, line: int | None = None, column: str | None = None):
        """Record one problem: what is wrong, the fix, and its line and column (or field)."""
        self.total += 1
        self.kept.append(Problem(self.source, message, fix, line, column))
        if len(self.kept) > 2 * self.limit:  # bound memory on files where every row is bad
            self.kept = self._first(self.kept)

    def _first(self, problems: list[Problem]) -> list[Problem]:
        return sorted(problems, key=lambda p: p.line or 0)[: self.limit]

    def raise_if_any(self) -> None:
        """Raise an InputError listing the first problems (by line), if any were recorded."""
        if not self.total:
            return
        problems = self._first(self.kept)
        hidden = self.total - len(problems)
        if hidden:
            problems.append(
                Problem(
                    self.source,
                    f"{hidden} more problem(s) not listed",
                    "fix the problems above and check the file again to see the rest",
                )
            )
        noun = "problem" if self.total == 1 else "problems"
        raise InputError(f"{self.source}: {self.total} {noun} found", problems)


def _fail(source: str, message: str, fix: str, line: int | None = None) -> NoReturn:
    """Raise an InputError for a problem that stops reading the file at once."""
    raise InputError(f"{source}: {message}", [Problem(source, message, fix, line)])


def _read(path: str | Path, spec: _Spec, max_problems: int, caps: _Caps) -> Table:
    source = str(path)
    _check_path(source)
    fmt = _format_of(source)
    if fmt != "parquet" and caps.bytes is not None:
        size = _size(source)
        if size > caps.bytes:
            raise TableTooLarge(source, "bytes", caps.bytes, size)
    data = _read_bytes(source)
    if not data.removeprefix(_UTF8_BOM).strip():
        _fail(source, "the file is empty", "write a header line and one labelled record per line")
    if fmt != "parquet":
        _check_text_caps(source, fmt, data, caps)
    problems = FileProblems(source, max_problems)
    parsed = _parse(source, fmt, data, spec, problems, caps)
    table = _build_table(source, parsed, spec, problems)
    table.sha256 = hashlib.sha256(data).hexdigest()
    problems.raise_if_any()
    return table


def _check_path(source: str) -> None:
    """A missing path or a directory is an InputError."""
    path = Path(source)
    if "\x00" in source:
        _fail(source, "the path holds a NUL character", "check the path")
    if path.is_dir():
        _fail(source, "is a directory, not a file", _directory_fix(path))
    if not path.exists():
        _fail(source, "file not found", _missing_fix(path))


def _check_text_caps(source: str, fmt: str, data: bytes, caps: _Caps) -> None:
    """Refuse a CSV/TSV/JSONL file over the row or memory cap before parsing a line."""
    lines = data.count(b"\n") + (not data.endswith(b"\n")) - (fmt != "jsonl")
    if caps.rows is not None and lines > caps.rows:
        raise TableTooLarge(source, "rows", caps.rows, lines)
    if caps.memory is None:
        return
    # each delimiter (JSON: comma, bracket, brace) can make one more object
    marks = {"csv": (b",",), "tsv": (b"\t",), "jsonl": (b",", b"[", b"{")}[fmt]
    objects = sum(data.count(mark) for mark in marks)
    estimate = _memory_estimate(len(data), objects, lines)
    if estimate > caps.memory:
        raise TableTooLarge(source, "memory", caps.memory, estimate)


def _memory_estimate(data_bytes: int, objects: int, rows: int) -> int:
    """What reading a file may take in memory (see ``_ROW_MEMORY`` and its neighbours)."""
    return _BYTES_MEMORY * data_bytes + _OBJECT_MEMORY * objects + _ROW_MEMORY * max(rows, 0)


def _size(source: str) -> int:
    try:
        return Path(source).stat().st_size
    except OSError as exc:
        _fail(source, f"cannot read the file: {exc.strerror}", "check the file's permissions")


def _read_bytes(source: str) -> bytes:
    """The file's bytes; an unreadable file is an InputError."""
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        _fail(source, f"cannot read the file: {exc.strerror}", "check the file's permissions")


def _missing_fix(path: Path) -> str:
    fix = f"check the path (relative paths start from {Path.cwd()})"
    names = _data_files(path.parent)
    close = difflib.get_close_matches(path.name, names, n=3)
    if close:
        fix += "; did you mean " + " or ".join(repr(str(path.parent / c)) for c in close) + "?"
    return fix


def _data_files(folder: Path) -> list[str]:
    """Names of the files in ``folder`` that ``read_table`` reads (none if unlistable)."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in FORMATS)
    except OSError:
        return []


def _directory_fix(path: Path) -> str:
    files = _data_files(path)
    if files:
        return "pass one data file inside it, e.g. " + ", ".join(files[:5])
    return "pass a data file (" + ", ".join(FORMATS) + ")"


def _format_of(source: str) -> str:
    suffix = Path(source).suffix.lower()
    if suffix not in FORMATS:
        supported = ", ".join(FORMATS)
        _fail(
            source,
            f"unsupported file extension {suffix or '(none)'!r}; supported: {supported}",
            f"convert the file to one of {supported} and give it that extension",
        )
    return FORMATS[suffix]


def _parse(
    source: str, fmt: str, data: bytes, spec: _Spec, problems: FileProblems, caps: _Caps
) -> _Parsed:
    """Dispatch on the format."""
    if fmt == "parquet":
        return _read_parquet(source, data, spec, problems, caps)
    text = _decode(data, problems)
    if text is None or _has_nul(text, problems):
        return _Parsed(fmt, [], _NO_COLUMNS)
    del text  # valid UTF-8: parsed from the bytes a line at a time, no copy of it all held
    if fmt == "jsonl":
        return _read_jsonl(_text_lines(data, "\n"), spec, problems)
    return _read_delimited(_text_lines(data, ""), len(data), fmt, spec, problems)


def _text_lines(data: bytes, newline: str) -> Iterator[str]:
    """The lines of valid UTF-8 ``data`` (BOM dropped), ends kept, decoded one at a time.

    ``newline=""`` ends lines at ``\\n``, ``\\r\\n`` or ``\\r`` (what the csv module wants);
    ``"\\n"`` only at ``\\n`` (JSON lines).
    """
    return io.TextIOWrapper(
        io.BytesIO(data.removeprefix(_UTF8_BOM)), encoding="utf-8", newline=newline
    )


def _decode(data: bytes, problems: FileProblems) -> str | None:
    """UTF-8 text without a BOM, or None after reporting each line with bad bytes."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        problems.add("the file is UTF-16, not UTF-8", _UTF16_FIX, line=1)
        return None
    body = data.removeprefix(_UTF8_BOM)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for number, raw in enumerate(body.split(b"\n"), 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = raw[exc.start]
            message = f"byte 0x{byte:02x} at position {exc.start + 1} is not valid UTF-8"
            problems.add(message, _UTF8_FIX, line=number)
    return None


def _has_nul(text: str, problems: FileProblems) -> bool:
    """Report every line with a NUL character (a binary or UTF-16 file); True if any."""
    if "\x00" not in text:
        return False
    for number, line in enumerate(text.split("\n"), 1):
        if "\x00" in line:
            message = "the line holds a NUL byte: the file looks binary or UTF-16, not UTF-8 text"
            problems.add(message, _UTF16_FIX, line=number)
    return True


# ---------------------------------------------------------------- columns


def _find_column(present: Sequence[str], wanted: str | None, candidates: Sequence[str]):
    """The column named ``wanted`` (exact, else case-insensitive), or the first candidate."""
    lowered = {name.strip().lower(): name for name in reversed(present)}
    if wanted is not None:
        return wanted if wanted in present else lowered.get(wanted.strip().lower())
    return next((lowered[c] for c in candidates if c in lowered), None)


def _resolve_columns(
    present: Sequence[str], spec: _Spec, problems: FileProblems, line: int | None, hint: str = ""
) -> _Columns | None:
    """Pick the text and label columns; report each missing one. None if any is missing."""
    label_candidates = ("labels", *LABEL_COLUMNS) if spec.multi_label else LABEL_COLUMNS
    text = _find_column(present, spec.text_column, TEXT_COLUMNS)
    label = _find_column(present, spec.label_column, label_candidates) if spec.need_label else None
    if text is None:
        _report_missing("text", spec.text_column, TEXT_COLUMNS, present, problems, line, hint)
    if spec.need_label and label is None:
        wanted = spec.label_column
        _report_missing("label", wanted, label_candidates, present, problems, line, hint)
    if text is None or (spec.need_label and label is None):
        return None
    return _Columns(text, label)


def _report_missing(
    role: str,
    wanted: str | None,
    candidates: Sequence[str],
    present: Sequence[str],
    problems: FileProblems,
    line: int | None,
    hint: str,
) -> None:
    listed = ", ".join(repr(p) for p in present[:_MAX_LISTED])
    if len(present) > _MAX_LISTED:
        listed += f", … ({len(present)} in all)"
    if wanted is not None:
        message = f"{role} column {wanted!r} not found; the columns present are: {listed}"
    else:
        tried = ", ".join(candidates)
        message = f"no {role} column found (looked for {tried}); the columns present are: {listed}"
    fix = f"pass --{role}-column with the name of the column that holds the {role}s"
    problems.add(message, fix + hint, line=line)


def _delimiter_hint(header: Sequence[str], delimiter: str) -> str:
    """A hint when a one-column header holds the other delimiter (a CSV named .tsv)."""
    if len(header) != 1:
        return ""
    if delimiter == "," and "\t" in header[0]:
        return "; the header holds tabs: if the file is tab-separated, name it .tsv"
    if delimiter == "\t" and "," in header[0]:
        return "; the header holds commas: if the file is comma-separated, name it .csv"
    return ""


# ---------------------------------------------------------------- CSV / TSV


def _read_delimited(
    lines: Iterator[str], size: int, fmt: str, spec: _Spec, problems: FileProblems
) -> _Parsed:
    """Records of a CSV/TSV text; each keeps the physical line where it starts."""
    delimiter = "\t" if fmt == "tsv" else ","
    if csv.field_size_limit() < size:
        # Long texts are not errors; no field can be longer than the whole file. The limit is
        # process-wide, so it is only ever raised, never lowered.
        csv.field_size_limit(size)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    rows = _csv_rows(reader, problems)
    first = next(rows, None)
    if first is None:
        problems.add("no header line found", "write a header line such as text,label", line=1)
        return _Parsed(fmt, [], _NO_COLUMNS)
    header_line, header = first[0], [name.strip() for name in first[1]]
    hint = _delimiter_hint(header, delimiter)
    columns = _resolve_columns(header, spec, problems, header_line, hint)
    text_at = header.index(columns.text) if columns and columns.text is not None else 0
    label_at = header.index(columns.label) if columns and columns.label else None
    records: list[_Raw] = []
    n_rows = 0
    for line, row in rows:
        n_rows += 1
        if len(row) != len(header):
            message = f"the row has {len(row)} field(s), the header has {len(header)}"
            problems.add(message, _RAGGED_FIX, line=line)
        elif columns is not None:
            label = row[label_at] if label_at is not None else None
            records.append(_Raw(line, row[text_at], label))
    if n_rows == 0:
        message = "the file has a header but no records"
        problems.add(message, "add one labelled record per line below the header", header_line)
    return _Parsed(fmt, records, columns or _NO_COLUMNS)


def _csv_rows(reader, problems: FileProblems) -> Iterator[tuple[int, list[str]]]:
    """(start line, fields) of each non-blank row; malformed rows become problems."""
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            message = f"malformed quoting: {exc}"
            if "unexpected end of data" in str(exc):
                message = "a quoted field that starts in this record is never closed"
            problems.add(message, _QUOTE_FIX, line=start)
        else:
            if len(row) > 1 or (row and row[0].strip()):
                yield start, row
        start = reader.line_num + 1


# ---------------------------------------------------------------- JSON lines


def _read_jsonl(lines: Iterator[str], spec: _Spec, problems: FileProblems) -> _Parsed:
    """Records of JSON lines, or of OpenAI chat JSONL when the first has "messages"."""
    objects = list(_json_objects(lines, problems))
    if not objects:
        return _Parsed("jsonl", [], _NO_COLUMNS)
    if "messages" in objects[0][1]:
        records = [_chat_record(line, obj, spec, problems) for line, obj in objects]
        kept = [r for r in records if r is not None]
        return _Parsed("chat", kept, _Columns("messages", "messages"))
    present = list(dict.fromkeys(key for _, obj in objects for key in obj))
    columns = _resolve_columns(present, spec, problems, objects[0][0])
    if columns is None:
        return _Parsed("jsonl", [], _NO_COLUMNS)
    records = [_json_record(line, obj, columns, problems) for line, obj in objects]
    return _Parsed("jsonl", [r for r in records if r is not None], columns)


def _json_objects(
    lines: Iterator[str],
    problems: FileProblems,
    jsonl_fix: str = _JSONL_FIX,
    nested_fix: str = _NESTED_FIX,
) -> Iterator[tuple[int, dict]]:
    """(line, object) of each non-blank line; bad JSON and non-objects become problems."""
    first = True
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except RecursionError:
            depth = sys.getrecursionlimit()
            message = f"the line is nested too deeply to read (over about {depth:,} levels)"
            problems.add(message, nested_fix, line=number)
            first = False
            continue
        except json.JSONDecodeError as exc:
            hint = _json_hint(line, first)
            message = f"invalid JSON: {exc.msg} (character {exc.colno})"
            problems.add(message + hint, jsonl_fix, line=number)
            if hint:  # the whole file is in another format: one problem says it all
                return
            first = False
            continue
        first = False
        if isinstance(value, dict):
            yield number, value
        else:
            kind = type(value).__name__.replace("dict", "object")
            problems.add(f"the line is a JSON {kind}, not an object", jsonl_fix, line=number)


def _json_hint(line: str, first: bool) -> str:
    """Why the first line of a .jsonl file may not parse: it is another format."""
    if not first:
        return ""
    if line.startswith("["):
        return "; the file looks like one JSON array, not JSON lines (one object per line)"
    if line == "{":
        return "; the file looks like pretty-printed JSON: JSON lines needs one object per line"
    if not line.startswith("{") and ("," in line or "\t" in line):
        return "; the file looks like CSV/TSV, not JSON lines: rename it to .csv or .tsv"
    return ""


def _json_record(line: int, obj: dict, columns: _Columns, problems: FileProblems) -> _Raw | None:
    missing = [c for c in (columns.text, columns.label) if c is not None and c not in obj]
    for key in missing:
        problems.add(f"the record has no {key!r} key", f"add {key!r} to every record", line, key)
    if missing:
        return None
    return _Raw(line, obj[columns.text], obj[columns.label] if columns.label else None)


def _chat_record(line: int, obj: dict, spec: _Spec, problems: FileProblems) -> _Raw | None:
    """Text = the user turn(s), label = the final assistant turn; system turns ignored."""
    messages = obj.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        fix = 'give "messages" as a list of {"role": ..., "content": ...} objects'
        problems.add('"messages" is not a list of message objects', fix, line, "messages")
        return None
    users = [_content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    ok = True
    if not users:
        fix = 'add {"role": "user", "content": TEXT} holding the text to classify'
        problems.add("the chat record has no user message", fix, line, "messages")
        ok = False
    last = messages[-1] if messages else {}
    if spec.need_label and last.get("role") != "assistant":
        fix = 'end every record with {"role": "assistant", "content": LABEL}'
        message = "the chat record does not end with an assistant message (the label)"
        problems.add(message, fix, line, "messages")
        ok = False
    if not ok:
        return None
    label = _content_text(last.get("content")) if spec.need_label else None
    return _Raw(line, "\n".join(u for u in users if u.strip()), label)


def _content_text(content: Any) -> str:
    """A message's text: a string, or the texts of its ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        ]
        return "\n".join(parts)
    return ""


# ---------------------------------------------------------------- Parquet


def _read_parquet(
    source: str, data: bytes, spec: _Spec, problems: FileProblems, caps: _Caps
) -> _Parsed:
    """Records of a Parquet file; ``line`` is the 1-based row number."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not (data.startswith(b"PAR1") and data.endswith(b"PAR1")):
        message = "the file is not Parquet (it lacks the PAR1 magic bytes)" + _looks_like(data)
        problems.add(message, "export the data as Parquet, or give the file its real extension")
        return _Parsed("parquet", [], _NO_COLUMNS)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        columns = _resolve_columns(parquet.schema_arrow.names, spec, problems, None)
        if columns is None:
            return _Parsed("parquet", [], _NO_COLUMNS)
        wanted = list(dict.fromkeys(c for c in (columns.text, columns.label) if c is not None))
        _check_parquet_caps(source, data, parquet, wanted, caps)
        table = parquet.read(columns=wanted)
        texts = table.column(columns.text).to_pylist()
        labels = table.column(columns.label).to_pylist() if columns.label else [None] * len(texts)
    except (pa.ArrowException, OSError, ValueError) as exc:
        problems.add(f"cannot read the Parquet file: {exc}", "re-export the data as Parquet")
        return _Parsed("parquet", [], _NO_COLUMNS)
    if not texts:
        problems.add("the file has no rows", "export a table with at least one labelled row")
    records = [_Raw(i, t, lab) for i, (t, lab) in enumerate(zip(texts, labels, strict=True), 1)]
    return _Parsed("parquet", records, columns)


def _check_parquet_caps(source: str, data: bytes, parquet, wanted: list[str], caps: _Caps) -> None:
    """Refuse a Parquet file over the caps before its columns are decoded.

    The footer gives the rows, the values and a lower bound of the decoded size (each column
    chunk's uncompressed size, and 4 bytes per value). Dictionary and run-length encoding
    hide the rest (one long string repeated a million times stays tiny even uncompressed), so
    the columns are then read batch by batch *as dictionaries* and each batch's decoded size
    computed from the dictionary's lengths: memory stays at the indices of one batch.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = parquet.metadata
    if caps.rows is not None and meta.num_rows > caps.rows:
        raise TableTooLarge(source, "rows", caps.rows, meta.num_rows)
    if caps.bytes is None and caps.memory is None:
        return
    # the leaf columns of the wanted ones ("labels" -> "labels.list.element")
    paths = {i: parquet.schema.column(i).path for i in range(meta.num_columns)}
    indices = [i for i, path in paths.items() if any(path.split(".")[0] == name for name in wanted)]
    chunks = [
        meta.row_group(group).column(i) for group in range(meta.num_row_groups) for i in indices
    ]
    values = sum(chunk.num_values for chunk in chunks)

    def check(decoded: int) -> None:
        if caps.bytes is not None and decoded > caps.bytes:
            raise TableTooLarge(source, "bytes", caps.bytes, None)
        estimate = _memory_estimate(decoded, values, meta.num_rows)
        if caps.memory is not None and estimate > caps.memory:
            raise TableTooLarge(source, "memory", caps.memory, estimate)

    check(sum(max(chunk.total_uncompressed_size, 4 * chunk.num_values) for chunk in chunks))
    # past this many decoded bytes a cap is exceeded whatever follows: stop reading there
    stop = min(c for c in (caps.bytes, caps.memory) if c is not None)
    strings = [paths[i] for i in indices if parquet.schema.column(i).physical_type == "BYTE_ARRAY"]
    as_dictionaries = pq.ParquetFile(pa.BufferReader(data), read_dictionary=strings)
    decoded = 0
    for batch in as_dictionaries.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=wanted):
        decoded += sum(_decoded_bytes(column) for column in batch.columns)
        if decoded > stop:
            break
    check(decoded)


def _decoded_bytes(array) -> int:
    """Bytes an Arrow array takes decoded: strings plain (4-byte offset + UTF-8 each), lists
    and structs by their values, dictionaries as if each index were its value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):
        values = array.dictionary
        if _is_binary(values.type):
            lengths = pc.take(pc.binary_length(values), array.indices)
            return 4 * len(array) + int(pc.sum(lengths).as_py() or 0)
        return _decoded_bytes(values.take(array.indices))
    if _is_binary(kind):
        return 4 * len(array) + int(pc.sum(pc.binary_length(array)).as_py() or 0)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return 4 * len(array) + _decoded_bytes(array.flatten())
    if pa.types.is_struct(kind):
        return sum(_decoded_bytes(child) for child in array.flatten())
    return int(array.nbytes)


def _is_binary(kind) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    )


def _looks_like(data: bytes) -> str:
    head = data.removeprefix(_UTF8_BOM)[:200].lstrip()
    if head.startswith((b"{", b"[")):
        return "; it looks like JSON: name it .jsonl"
    if b"\t" in head.split(b"\n")[0]:
        return "; it looks like TSV: name it .tsv"
    if b"," in head.split(b"\n")[0]:
        return "; it looks like CSV: name it .csv"
    return ""


# ---------------------------------------------------------------- values -> Table


def _build_table(source: str, parsed: _Parsed, spec: _Spec, problems: FileProblems) -> Table:
    """Validate each record's text and labels into a Table (sha256 filled in by the caller)."""
    table = Table(source, [], [], [], "", parsed.format, spec.multi_label)
    where = " in row {}" if parsed.format == "parquet" else ""
    for rec in parsed.records:
        text, text_error = _text_of(rec.text)
        labels, label_error = _labels_of(rec.label, spec) if spec.need_label else ((), None)
        text_error = text_error or surrogate_error("text", text)
        for label in labels:
            label_error = label_error or surrogate_error("label", label)
        if text_error:
            message = text_error + where.format(rec.line)
            problems.add(message, _text_fix(text_error), rec.line, parsed.columns.text)
        if label_error:
            message = label_error + where.format(rec.line)
            problems.add(message, _label_fix(label_error), rec.line, parsed.columns.label)
        if not (text_error or label_error):
            table.texts.append(text)
            table.labels.append(labels)
            table.lines.append(rec.line)
    return table


def _text_of(value: Any) -> tuple[str, str | None]:
    """The stripped text, or an error message."""
    if isinstance(value, dict | list):
        return (
            "",
            f"the text is {'an object' if isinstance(value, dict) else 'a list'}, not a string",
        )
    text = _scalar(value).strip()
    return text, None if text else "empty text"


def _labels_of(value: Any, spec: _Spec) -> tuple[tuple[str, ...], str | None]:
    """The label tuple of a cell, a JSON value or a Parquet value, or an error message."""
    if isinstance(value, dict):
        return (), "the label is a JSON object, not a string"
    if isinstance(value, list | tuple):
        if not spec.multi_label:
            return (), "the label is a list, but the data is single-label"
        if any(isinstance(v, dict | list | tuple) for v in value):
            return (), "the label list holds something other than strings"
        parts = [_scalar(v) for v in value]
    else:
        cell = _scalar(value)
        parts = cell.split(spec.separator) if spec.multi_label and spec.separator else [cell]
    labels = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    return labels, None if labels else "empty label"


def _scalar(value: Any) -> str:
    """A cell as a string: None and NaN are empty; 3.0 reads as "3"."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def surrogate_error(what: str, value: str) -> str | None:
    """An error message if ``value`` holds a lone surrogate (valid in JSON, not UTF-8)."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        return (
            f"the {what} holds a lone UTF-16 surrogate \\u{code:04x} at character "
            f"{exc.start + 1}, which is not text"
        )
    return None


def _text_fix(error: str) -> str:
    if "surrogate" in error:
        return SURROGATE_FIX
    if error.startswith("empty"):
        return "write the text, or delete the record"
    return "give the text as a string"


def _label_fix(error: str) -> str:
    if "surrogate" in error:
        return SURROGATE_FIX
    if error.startswith("empty"):
        return "label the record, or delete it"
    if "single-label" in error:
        return "pass --multi-label if records may carry several labels"
    return "give the label as a string (or, with --multi-label, a list of strings)"


# ---------------------------------------------------------------- plain text


def _read_txt(path: str | Path) -> list[str]:
    """Texts of a .txt file: one per non-blank line."""
    source = str(path)
    _check_path(source)
    data = _read_bytes(source)
    problems = FileProblems(source, 50)
    text = _decode(data, problems)
    problems.raise_if_any()
    texts = [line.strip() for line in (text or "").split("\n") if line.strip()]
    if not texts:
        _fail(source, "the file has no texts", "write one text per line")
    return texts
