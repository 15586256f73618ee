"""Ingest stage: validate a landing batch, then version and publish it, or quarantine it.

A batch is one CSV per day in ``landing_dir/<dataset>/``, for the model's event dataset and
for each of its reference tables (``references:`` in the spec), each gated by its own rules. A batch that passes validation is
versioned with DVC in the data workspace (its own git repo; one commit per new version,
pushed to the DVC remote) and its typed rows are written to the offline feature source,
one parquet file per batch day. A batch that fails is moved to ``quarantine_dir/<dataset>/``
with its validation record, and nothing else changes.

The landing area takes regular files only, of at most ``settings.max_batch_bytes`` (``AIRLOOP_MAX_BATCH_BYTES``). A symlink, FIFO,
device, socket or directory with a batch name, or a file over the limit, is refused unread:
it is moved (the entry itself, never what a link points to) to quarantine with a validation
record saying why, once. A batch is copied out of the landing area through a descriptor
opened without following links or blocking, and everything after reads that copy.

Plain functions without Airflow; DVC, pandas and GX are imported inside them.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from airloop.fileio import atomic_path, exclusive
from airloop.validation import (
    BatchNameError,
    Failure,
    ValidationResult,
    batch_day,
    read_typed,
    record_page,
    record_refusal,
    run_validation,
    validate_batch,
)

if TYPE_CHECKING:
    import pandas as pd

    from airloop.settings import Settings
    from airloop.spec import ModelSpec, TableSpec

__all__ = [
    "BatchNameError",
    "BatchRejected",
    "BatchVersion",
    "committed_batches",
    "IngestResult",
    "batch_day",
    "find_pending_batches",
    "ingest_batch",
    "max_batch_bytes",
    "read_version",
    "validate_batch",
]

log = logging.getLogger(__name__)

_RESULT_TRAILER = "Validation-Result-Id"
_ROWS_TRAILER = "Rows"
# Landing entries refused but not movable to quarantine (another file system): never picked again.
_REFUSED_IN_PLACE = "refused-in-place.jsonl"
_COPY_BLOCK = 1 << 20


class BatchRejected(ValueError):
    """A batch failed validation, or was refused unread, and was quarantined.

    The message is the readable summary; it quotes the batch only through short excerpts.
    """

    def __init__(self, validation: ValidationResult, quarantined: Path):
        super().__init__(validation.summary())
        self.validation = validation
        self.quarantined = quarantined


@dataclass(frozen=True)
class IngestResult:
    """One batch through the gate: where it is versioned (DVC md5 and revision), validated and published."""

    model: str
    dataset: str
    batch: str
    day: dt.date
    rows: int
    md5: str
    dvc_rev: str
    validation_result_id: str
    # The validation record's page in the Airflow UI (a path under the Airflow base URL).
    validation_page: str
    data_docs: str | None
    offline_path: str
    already_ingested: bool

    def as_dict(self) -> dict:
        """JSON-able form (travels as Asset event extra and XCom)."""
        out = asdict(self)
        out["day"] = self.day.isoformat()
        return out


@dataclass(frozen=True)
class _Version:
    md5: str
    rev: str
    result_id: str
    rows: int


def max_batch_bytes(settings: "Settings | None" = None) -> int:
    """The largest landing file ingest reads, in bytes (``AIRLOOP_MAX_BATCH_BYTES``, 256 MiB)."""
    from airloop.settings import get_settings

    return (settings or get_settings()).max_batch_bytes


def ingest_batch(spec: "ModelSpec", path: str | Path, settings: "Settings | None" = None) -> IngestResult:
    """Validate one landing file, then publish it (DVC + offline parquet) or quarantine it.

    Raises ``BatchNameError`` for a file name without the batch day, ``ValueError`` for a
    path outside the dataset's landing folder, and ``BatchRejected`` (after quarantining)
    for a batch that fails validation or is not a regular file within the size limit.
    Re-ingesting the bytes already versioned changes nothing and returns
    ``already_ingested=True``.
    """
    from airloop.settings import get_settings

    settings = settings or get_settings()
    path = Path(path)
    table = _table_of(spec, path)
    day = batch_day(table, path)
    landing = settings.landing_dir / table.name
    if path.parent.resolve() != landing.resolve():
        raise ValueError(
            f"{str(path)!r} is not in the landing folder {str(landing)!r}: only files there are ingested"
        )
    relpath = f"{table.name}/{path.name}"
    offline_path = settings.offline_dir / table.name / f"{path.stem}.parquet"
    # The batch is read from a private copy beside its place in the workspace, so what is
    # validated is what gets versioned even if the landing file changes meanwhile.
    copy = settings.dvc_workspace / relpath
    copy = copy.with_name(f".{copy.name}.tmp")

    _import_libraries()
    # One ingest at a time per workspace: git, DVC and the GX file context are not safe to share.
    with exclusive(settings.dvc_workspace.with_name(settings.dvc_workspace.name + ".lock")):
        try:
            md5 = _copy_landing_file(path, copy, settings.max_batch_bytes)
        except _Refused as refused:
            failure = Failure(None, refused.expectation, detail=str(refused))
            validation = record_refusal(table, path.name, day, failure, settings)
            quarantined = _quarantine(table, path, validation, settings)
            log.warning("%s refused unread (%s); quarantined at %s", path.name, refused, quarantined)
            raise BatchRejected(validation, quarantined) from None
        try:
            return _ingest_copy(table, path, copy, md5, day, relpath, offline_path, settings)
        finally:
            copy.unlink(missing_ok=True)


def _import_libraries() -> None:
    """Import what validating and versioning need before taking the workspace lock: Great
    Expectations alone takes seconds, and batches waiting for the lock can import side by side."""
    import great_expectations  # noqa: F401
    import pandas  # noqa: F401
    from dvc.repo import Repo  # noqa: F401


def _table_of(spec: "ModelSpec", path: Path) -> "TableSpec":
    """The table whose landing folder ``path`` is in (default: the events)."""
    name = path.parent.name
    return spec.table(name) if name in spec.dataset_names else spec.events


def _ingest_copy(
    table: "TableSpec",
    path: Path,
    copy: Path,
    md5: str,
    day: dt.date,
    relpath: str,
    offline_path: Path,
    settings: "Settings",
) -> IngestResult:
    """``ingest_batch`` once the landing file is safely copied to ``copy`` (under the lock)."""
    known = _committed_version(settings.dvc_workspace, relpath)
    if known and known.md5 == md5:
        if not offline_path.exists():
            # A previous run versioned the batch but stopped before publishing the rows.
            frame, _ = read_typed(table, copy)
            _write_parquet(frame, offline_path)
        log.info("%s is already ingested at %s", relpath, known.rev)
        data_docs = _recorded_data_docs(table, known.result_id, settings)
        return _result(table, path.name, day, known, data_docs, offline_path, already_ingested=True)

    validation, frame = run_validation(table, path.name, copy, day, settings)
    if not validation.success:
        quarantined = _quarantine(table, path, validation, settings)
        log.warning("%s quarantined at %s", path.name, quarantined)
        raise BatchRejected(validation, quarantined)

    version = _version_batch(_ensure_workspace(settings), relpath, copy, validation)
    _write_parquet(frame, offline_path)
    log.info("%s versioned at %s (md5 %s), %d rows published", relpath, version.rev, version.md5,
             version.rows)
    return _result(table, path.name, day, version, validation.data_docs, offline_path,
                   already_ingested=False)


def find_pending_batches(
    spec: "ModelSpec", settings: "Settings | None" = None, day: dt.date | None = None
) -> list[Path]:
    """Landing files whose bytes are not the version already ingested, oldest day first
    (reference tables before the events of the same day).

    Files matching the dataset pattern but without a date in their name are skipped with a
    warning (``ingest_batch`` would refuse them). Entries that are not regular files or are
    over the size limit are pending without being opened: ``ingest_batch`` refuses them.
    """
    from airloop.settings import get_settings

    settings = settings or get_settings()
    pending: list[tuple[dt.date, int, Path]] = []
    for order, table in enumerate(reversed(spec.tables)):
        pending += [(d, order, p) for d, p in _pending_in(table, settings, day)]
    return [path for *_, path in sorted(pending)]


def _pending_in(table: "TableSpec", settings: "Settings", day: dt.date | None) -> list[tuple[dt.date, Path]]:
    """``find_pending_batches`` for one table."""
    workspace = settings.dvc_workspace
    limit = settings.max_batch_bytes
    refused = _refused_in_place(table, settings)
    pending: list[tuple[dt.date, Path]] = []
    for path in sorted((settings.landing_dir / table.name).glob(table.pattern)):
        try:
            batch = batch_day(table, path)
        except BatchNameError as exc:
            log.warning("skipping %s", exc)
            continue
        if day is not None and batch != day:
            continue
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if _identity(path, info) in refused:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            pending.append((batch, path))
            continue
        known = _committed_version(workspace, f"{table.name}/{path.name}")
        if known is None or known.md5 != _landing_md5(path, limit):
            pending.append((batch, path))
    return pending


def read_version(
    table: "TableSpec", batch_name: str, rev: str, settings: "Settings | None" = None
) -> bytes:
    """The bytes of ``batch_name`` as versioned at git revision ``rev`` of the data workspace."""
    import dvc.api

    from airloop.settings import get_settings

    settings = settings or get_settings()
    return dvc.api.read(
        f"{table.name}/{batch_name}", repo=str(settings.dvc_workspace), rev=rev, mode="rb"
    )


@dataclass(frozen=True)
class BatchVersion:
    """One batch as the data workspace has it versioned: its DVC md5 and revision, validation id and rows."""

    batch: str
    md5: str
    rev: str
    validation_result_id: str
    rows: int
    dataset: str = ""


def committed_batches(table: "TableSpec", settings: "Settings | None" = None) -> tuple[str, list[BatchVersion]]:
    """The data workspace's HEAD revision and every batch of ``table`` versioned there, oldest
    day first (a model's events: ``committed_batches(spec.events)``).

    Together they name the exact data a model is trained on: any batch reads back with
    :func:`read_version` at that revision.
    """
    from airloop.settings import get_settings

    settings = settings or get_settings()
    workspace = settings.dvc_workspace
    if not (workspace / ".git").exists():
        return "", []
    head = _git(workspace, "rev-parse", "HEAD")
    names = _git(workspace, "ls-tree", "--name-only", "HEAD", f"{table.name}/").splitlines()
    batches = []
    for name in sorted(n for n in names if n.endswith(".dvc")):
        relpath = name.removesuffix(".dvc")
        version = _committed_version(workspace, relpath)
        if version:
            batches.append(BatchVersion(
                Path(relpath).name, version.md5, version.rev, version.result_id, version.rows, table.name
            ))
    return head, batches


def _result(
    table: "TableSpec",
    batch: str,
    day: dt.date,
    version: _Version,
    data_docs: str | None,
    offline_path: Path,
    *,
    already_ingested: bool,
) -> IngestResult:
    return IngestResult(
        model=table.model,
        dataset=table.name,
        batch=batch,
        day=day,
        rows=version.rows,
        md5=version.md5,
        dvc_rev=version.rev,
        validation_result_id=version.result_id,
        validation_page=record_page(table.name, version.result_id),
        data_docs=data_docs,
        offline_path=str(offline_path),
        already_ingested=already_ingested,
    )


def _recorded_data_docs(table: "TableSpec", result_id: str, settings: "Settings") -> str | None:
    import json

    record = settings.validation_dir / "results" / table.name / f"{result_id}.json"
    try:
        return json.loads(record.read_text()).get("data_docs")
    except (OSError, ValueError):
        return None


# --- reading the landing area ------------------------------------------------------------


class _Refused(ValueError):
    """A landing entry that is not read: not a regular file, or over the size limit."""

    def __init__(self, detail: str, expectation: str = "expect_file_to_be_a_regular_file"):
        super().__init__(detail)
        self.expectation = expectation


# What lstat says a landing entry is, for the refusal message.
_KINDS = (
    (stat.S_ISLNK, "a symbolic link (links are never followed: land the file itself)"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _open_landing_file(path: Path, limit: int) -> int:
    """A read descriptor on ``path`` if it is a regular file of at most ``limit`` bytes.

    O_NOFOLLOW and O_NONBLOCK, then fstat: an entry swapped for a link or a FIFO after the
    lstat is neither followed nor waited on.
    """
    mode = os.lstat(path).st_mode
    for test, kind in _KINDS:
        if test(mode):
            raise _Refused(f"{path.name!r} is {kind}, not a regular file; it was not opened")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Refused(f"{path.name!r} is {_KINDS[0][1]}, not a regular file; it was not opened") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _Refused(f"{path.name!r} is not a regular file; it was not read")
    if info.st_size > limit:
        os.close(fd)
        raise _too_large(path, info.st_size, limit)
    return fd


def _too_large(path: Path, size: int, limit: int) -> _Refused:
    return _Refused(
        f"{path.name!r} has {size:,} bytes, over the limit of {limit:,} bytes per batch "
        f"(AIRLOOP_MAX_BATCH_BYTES); it was not read",
        "expect_file_size_to_be_within_limit",
    )


def _copy_landing_file(path: Path, target: Path, limit: int) -> str:
    """Copy a landing file to ``target`` (at most ``limit`` bytes) and return its md5."""
    fd = _open_landing_file(path, limit)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.md5(), 0
    with os.fdopen(fd, "rb") as source, open(target, "wb") as out:
        while block := source.read(_COPY_BLOCK):
            size += len(block)
            if size > limit:  # grew since fstat
                out.close()
                target.unlink()
                raise _too_large(path, size, limit)
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _landing_md5(path: Path, limit: int) -> str | None:
    """md5 of a landing file, streamed; None if it is no longer a regular file within ``limit``."""
    try:
        fd = _open_landing_file(path, limit)
    except (_Refused, FileNotFoundError):
        return None
    with os.fdopen(fd, "rb") as source:
        return hashlib.file_digest(source, "md5").hexdigest()


# --- quarantine ---------------------------------------------------------------------------


def _quarantine(table: "TableSpec", path: Path, validation: ValidationResult, settings: "Settings") -> Path:
    """Move a landing entry with its validation record to quarantine; returns where it went."""
    folder = settings.quarantine_dir / table.name
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if os.path.lexists(target):
        # Keep an earlier rejected batch of the same day rather than overwrite it.
        target = folder / f"{path.stem}.{validation.result_id.rsplit('-', 1)[-1]}{path.suffix}"
    shutil.copyfile(validation.result_json, target.with_suffix(".validation.json"))
    if _move_entry(path, target):
        return target
    with (folder / _REFUSED_IN_PLACE).open("a") as record:
        entry = {"entry": _identity(path, os.lstat(path)), "result_id": validation.result_id}
        record.write(json.dumps(entry) + "\n")
    log.warning("%s cannot be moved to %s (another file system); left in place and not picked again",
                path.name, folder)
    return path


def _move_entry(path: Path, target: Path) -> bool:
    """Move the entry itself (a link stays a link). False if only a copy could move it and
    copying it would mean opening or walking it (a FIFO, device or directory across file
    systems)."""
    try:
        os.rename(path, target)
        return True
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode) or stat.S_ISREG(mode):
        shutil.move(path, target)  # re-creates a link from its text, never reads its target
        return True
    return False


def _identity(path: Path, info: os.stat_result) -> list:
    """What tells a landing entry from a later arrival under the same name (inodes get reused)."""
    return [path.name, info.st_dev, info.st_ino, info.st_mode, info.st_ctime_ns]


def _refused_in_place(table: "TableSpec", settings: "Settings") -> list[list]:
    """Identities of refused landing entries that could not be moved to quarantine."""
    record = settings.quarantine_dir / table.name / _REFUSED_IN_PLACE
    if not record.exists():
        return []
    return [json.loads(line)["entry"] for line in record.read_text().splitlines() if line.strip()]


# --- DVC workspace ------------------------------------------------------------------------


def _git(workspace: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(workspace), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def _ensure_workspace(settings: "Settings") -> Path:
    """The data workspace: its own git repo with DVC initialised and the remote configured."""
    from dvc.repo import Repo

    workspace = settings.dvc_workspace
    workspace.mkdir(parents=True, exist_ok=True)
    if not (workspace / ".git").exists():
        _git(workspace, "init", "-q")
    if not (workspace / ".dvc").exists():
        # A local identity so commits work on machines without a global git config.
        _git(workspace, "config", "user.name", "airloop")
        _git(workspace, "config", "user.email", "airloop@localhost")
        _git(workspace, "config", "commit.gpgsign", "false")
        with Repo.init(str(workspace)) as repo, repo.config.edit() as config:
            # dvc add stages the .dvc and .gitignore files itself (and stops printing hints).
            config["core"]["autostage"] = True
        _git(workspace, "add", ".dvc", ".dvcignore")
        _git(workspace, "commit", "-q", "-m", "Initialise the DVC data workspace")
    with Repo(str(workspace)) as repo, repo.config.edit("local") as config:
        # The remote is machine-specific: it lives in the untracked config.local and follows settings.
        config["remote"]["storage"] = {"url": settings.dvc_remote}
        config["core"]["remote"] = "storage"
    return workspace


def _committed_version(workspace: Path, relpath: str) -> _Version | None:
    """The version of ``relpath`` at the workspace's HEAD, or None if it was never committed."""
    import yaml

    if not (workspace / ".git").exists():
        return None
    try:
        dvc_file = yaml.safe_load(_git(workspace, "show", f"HEAD:{relpath}.dvc"))
        log_line = _git(
            workspace, "log", "-1", "--format=%H%x00"
            f"%(trailers:key={_RESULT_TRAILER},valueonly,separator=)%x00"
            f"%(trailers:key={_ROWS_TRAILER},valueonly,separator=)",
            "--", f"{relpath}.dvc",
        )
    except subprocess.CalledProcessError:
        return None
    rev, result_id, rows = log_line.split("\x00")
    return _Version(md5=dvc_file["outs"][0]["md5"], rev=rev, result_id=result_id, rows=int(rows or 0))


def _version_batch(workspace: Path, relpath: str, copy: Path, validation: ValidationResult) -> _Version:
    """Move the validated copy into place, dvc add + push it, then commit its .dvc file.

    Returns the new version.
    """
    import yaml
    from dvc.repo import Repo

    target = workspace / relpath
    os.replace(copy, target)  # same folder: atomic
    with Repo(str(workspace)) as repo:
        repo.add(str(target))
        # Push before committing: a commit in the workspace means the data is on the remote.
        repo.push(targets=[f"{target}.dvc"])
    message = (
        f"Add {target.name} ({validation.rows} rows)\n\n"
        f"{_RESULT_TRAILER}: {validation.result_id}\n"
        f"{_ROWS_TRAILER}: {validation.rows}\n"
    )
    gitignore = str(Path(relpath).parent / ".gitignore")  # dvc add lists the data file there
    _git(workspace, "commit", "-q", "-m", message, "--", f"{relpath}.dvc", gitignore)
    md5 = yaml.safe_load((workspace / f"{relpath}.dvc").read_text())["outs"][0]["md5"]
    return _Version(md5=md5, rev=_git(workspace, "rev-parse", "HEAD"),
                    result_id=validation.result_id, rows=validation.rows or 0)


# --- offline feature source ---------------------------------------------------------------


def _write_parquet(frame: "pd.DataFrame", path: Path) -> None:
    """Write the batch's rows atomically: feature readers never see half a file."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
