"""Where a job's files live under the data directory (shared by the API and the workers).

DATA_DIR/files/<file-id><ext>       uploaded files, named by id (never by the given name)
DATA_DIR/models/<job-id>/           the bundle a job wrote (staging: .<job-id>.partial)
DATA_DIR/jobs/<job-id>/             the child's log per attempt and its result/error JSON
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataDir:
    """Paths inside one data directory."""

    root: Path

    @property
    def files(self) -> Path:
        return self.root / "files"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def file_path(self, storage_name: str) -> Path:
        """An uploaded file's path from its storage name (id + extension)."""
        return self.files / storage_name

    def bundle(self, job_id: str) -> Path:
        """The bundle directory a job writes."""
        return self.models / job_id

    def job_dir(self, job_id: str) -> Path:
        """A job's working directory (logs, result, error)."""
        return self.jobs / job_id

    def create(self) -> None:
        """Make the directories (idempotent)."""
        for path in (self.files, self.models, self.jobs):
            path.mkdir(parents=True, exist_ok=True)
