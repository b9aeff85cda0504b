"""Download Binance public-data archives: HTTP, resume, checksums (I/O).

:func:`download` fetches the archives that :func:`sources.download.plan`
lists into ``out_dir``, each at its :attr:`~sources.download.Archive.path`
(Binance's layout without the leading ``data/``), so ``ticklet backtest
out_dir`` reads them as they are.

For every archive:

1. **Already complete?** If the archive and its ``.CHECKSUM`` file are both on
   disk and the archive's sha256 matches, it is skipped without touching the
   network. An archive that does not match is downloaded again.
2. The ``.CHECKSUM`` file is fetched (HTTP 404: the archive is not published,
   :class:`MissingArchive`).
3. The archive is downloaded to ``<name>.part``. If a ``.part`` is already
   there (an interrupted run), the download resumes from its end with an HTTP
   ``Range`` request; a server that ignores ``Range`` (answers 200) makes it
   start over.
4. The sha256 of the ``.part`` is checked against the ``.CHECKSUM`` file. On a
   match the ``.part`` becomes the archive and the ``.CHECKSUM`` file is kept
   beside it (so step 1 works offline); on a mismatch the bad file is deleted
   and :class:`ChecksumMismatch` names the file and both hashes. A resumed
   download that does not match is first retried once from scratch (the
   ``.part`` may come from an older version of the archive).

Transient failures (connection errors, timeouts, a body cut short, HTTP 5xx
and 429) are retried by :mod:`tenacity` with exponential backoff; a retried
archive download resumes where the failed attempt stopped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import requests
from tenacity import Retrying, before_sleep_log, retry_if_exception_type, stop_after_attempt, wait_exponential
from tqdm import tqdm

from sources.download import BASE_URL, Archive, parse_checksum

__all__ = ["ChecksumMismatch", "DownloadError", "DownloadReport", "MissingArchive", "download", "sha256_file"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 16


class DownloadError(Exception):
    """A download failed; the message says which archive and why."""


class MissingArchive(DownloadError):
    """Binance does not publish this archive (HTTP 404)."""

    def __init__(self, archive: Archive, url: str):
        self.archive, self.url = archive, url
        super().__init__(f"{archive.label} is not published: HTTP 404 for {url} "
                         "(check the symbol, market and dates; a day's archive appears the next day, "
                         "a month's in the first days of the next month)")


class ChecksumMismatch(DownloadError):
    """A downloaded archive does not match its published sha256."""

    def __init__(self, path: Path, expected: str, actual: str, url: str):
        self.path, self.expected, self.actual, self.url = path, expected, actual, url
        super().__init__(f"checksum mismatch for {path.name}: expected sha256 {expected}, got {actual} "
                         f"(from {url}); the bad file was deleted, run again to retry")


class _Transient(Exception):
    """A failure worth retrying (HTTP 5xx/429, an unexpected partial response)."""


_RETRY_ON = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError, _Transient)


@dataclass
class DownloadReport:
    """What :func:`download` did."""

    out_dir: Path
    downloaded: list[Path] = field(default_factory=list)  # fetched by this run (fully or resumed)
    present: list[Path] = field(default_factory=list)  # already complete, not fetched
    missing: list[tuple[Archive, str]] = field(default_factory=list)  # (archive, url) not published
    bytes: int = 0  # archive bytes received by this run

    @property
    def files(self) -> list[Path]:
        """Every archive now complete on disk, in date order."""
        return sorted(self.downloaded + self.present)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the CLI prints it)."""
        return {
            "out": str(self.out_dir),
            "archives": len(self.downloaded) + len(self.present) + len(self.missing),
            "downloaded": len(self.downloaded),
            "present": len(self.present),
            "missing": [{"archive": a.label, "url": url} for a, url in self.missing],
            "bytes": self.bytes,
        }


def sha256_file(path: str | os.PathLike) -> str:
    """Lower-case hex sha256 of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _status_error(r: requests.Response, archive: Archive, url: str) -> Exception:
    if r.status_code == 404:
        return MissingArchive(archive, url)
    if r.status_code >= 500 or r.status_code == 429:
        return _Transient(f"HTTP {r.status_code} {r.reason} for {url}")
    return DownloadError(f"{archive.label}: HTTP {r.status_code} {r.reason} for {url}")


class _Fetcher:
    """One HTTP session with the retry policy and the byte progress bar."""

    def __init__(self, session: requests.Session, base_url: str, retries: int, backoff_s: float,
                 timeout_s: float, bar: tqdm):
        self.session, self.base_url, self.timeout, self.bar = session, base_url, timeout_s, bar
        self.attempts = retries + 1
        self.retrying = Retrying(
            retry=retry_if_exception_type(_RETRY_ON),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=backoff_s, max=60),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        self.bytes = 0
        self.resumed = False

    def call(self, archive: Archive, url: str, fn, *args):
        """``fn(*args)`` under the retry policy.

        A final transient failure becomes a :class:`DownloadError` naming the
        archive and URL.
        """
        try:
            return self.retrying(fn, *args)
        except _RETRY_ON as ex:
            raise DownloadError(f"{archive.label}: giving up after {self.attempts} attempts: {ex} ({url})") from ex

    def checksum(self, archive: Archive) -> tuple[str, str]:
        """(sha256, raw text) of the archive's published ``.CHECKSUM`` file."""
        url = archive.checksum_url(self.base_url)

        def get() -> str:
            r = self.session.get(url, timeout=self.timeout)
            if r.status_code != 200:
                raise _status_error(r, archive, url)
            return r.text

        text = self.call(archive, url, get)
        try:
            return parse_checksum(text, archive.name), text
        except ValueError as ex:
            raise DownloadError(f"{archive.label}: bad checksum file {url}: {ex}") from None

    def to_part(self, archive: Archive, part: Path) -> bool:
        """Download the archive into ``part``, resuming it if it exists.

        Returns whether the finished file includes bytes from before this
        call.
        """
        url = archive.url(self.base_url)
        self.resumed = False
        self.call(archive, url, self._get_into, archive, url, part)
        return self.resumed

    def _get_into(self, archive: Archive, url: str, part: Path) -> None:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self.session.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if r.status_code == 416 and offset:
                # nothing after `offset`: the .part is already whole (or too long);
                # the checksum decides
                log.debug("%s: server has nothing after byte %d", part.name, offset)
                self.resumed = True
                return
            if r.status_code == 206 and offset:
                m = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
                if not m or int(m[1]) != offset:
                    part.unlink()
                    raise _Transient(f"asked for bytes from {offset}, got Content-Range "
                                     f"{r.headers.get('Content-Range')!r} for {url}; starting over")
                mode, self.resumed = "ab", True
                log.info("%s: resuming at byte %d", part.name, offset)
            elif r.status_code == 200:
                if offset:
                    log.info("%s: server ignored the Range request; starting over", part.name)
                mode, offset, self.resumed = "wb", 0, False
            else:
                raise _status_error(r, archive, url)
            length = r.headers.get("Content-Length")
            self.bar.set_description(archive.name, refresh=False)
            self.bar.reset(total=offset + int(length) if length and length.isdigit() else None)
            self.bar.update(offset)
            with open(part, mode) as f:
                for chunk in r.iter_content(_CHUNK):
                    f.write(chunk)
                    self.bytes += len(chunk)
                    self.bar.update(len(chunk))


def _complete(dest: Path, ck_path: Path, name: str) -> bool:
    """Whether ``dest`` is on disk and matches the ``.CHECKSUM`` file beside it."""
    if not (dest.is_file() and ck_path.is_file()):
        return False
    try:
        expected = parse_checksum(ck_path.read_text(), name)
    except ValueError:
        return False
    return sha256_file(dest) == expected


def _fetch(f: _Fetcher, archive: Archive, dest: Path) -> bool:
    """Make ``dest`` a verified copy of ``archive``; returns whether it was already complete (nothing downloaded)."""
    ck_path = dest.with_name(dest.name + ".CHECKSUM")
    if _complete(dest, ck_path, archive.name):
        log.debug("%s: complete, skipped", dest)
        return True
    expected, ck_text = f.checksum(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        if sha256_file(dest) == expected:  # an archive without its checksum file
            _write_atomic(ck_path, ck_text)
            return True
        log.warning("%s does not match its published checksum; downloading it again", dest)
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    url = archive.url(f.base_url)
    resumed = f.to_part(archive, part)
    actual = sha256_file(part)
    if actual != expected and resumed:
        log.warning("%s: resumed download does not match the checksum; downloading it from scratch", dest.name)
        part.unlink()
        f.to_part(archive, part)
        actual = sha256_file(part)
    if actual != expected:
        part.unlink()
        raise ChecksumMismatch(dest, expected, actual, url)
    part.replace(dest)
    _write_atomic(ck_path, ck_text)
    log.info("%s: downloaded and verified (sha256 %s)", dest, actual)
    return False


def download(archives: Iterable[Archive], out_dir: str | os.PathLike, base_url: str = BASE_URL, *,
             skip_missing: bool = False, progress: bool = False, retries: int = 5, backoff_s: float = 1.0,
             timeout_s: float = 30.0, session: Optional[requests.Session] = None) -> DownloadReport:
    """Download and verify ``archives`` into ``out_dir`` (see the module doc).

    Parameters
    ----------
    archives : iterable of Archive
        Usually :func:`sources.download.plan`'s result.
    out_dir : path
        Each archive goes to ``out_dir / archive.path``.
    base_url : str
        Server root; ``https://data.binance.vision`` by default.
    skip_missing : bool
        An archive that is not published (HTTP 404) is logged and reported in
        :attr:`DownloadReport.missing` instead of aborting the run.
    progress : bool
        Show tqdm progress bars (archives, and bytes of the current one) on stderr.
    retries : int
        Retries of a transient failure, per request.
    backoff_s : float
        First retry delay in seconds; it doubles with every retry (at most 60 s).
    timeout_s : float
        Connect and read timeout of each request.
    session : requests.Session, optional
        Session to use; a new one by default.

    Returns
    -------
    DownloadReport

    Raises
    ------
    MissingArchive
        An archive is not published and ``skip_missing`` is false. Archives
        before it in the list are complete on disk.
    ChecksumMismatch
        A downloaded archive does not match its ``.CHECKSUM`` file (it is deleted).
    DownloadError
        Any other failure, after the retries for transient ones.
    """
    archives = list(archives)
    out = Path(out_dir)
    report = DownloadReport(out)
    own = session is None
    session = session or requests.Session()
    files_bar = tqdm(total=len(archives), unit="file", desc="archives", disable=not progress, position=0)
    bytes_bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, disable=not progress, position=1, leave=False)
    f = _Fetcher(session, base_url, retries, backoff_s, timeout_s, bytes_bar)
    try:
        for archive in archives:
            dest = out / archive.path
            before = f.bytes
            try:
                (report.present if _fetch(f, archive, dest) else report.downloaded).append(dest)
            except MissingArchive as ex:
                if not skip_missing:
                    raise
                log.warning("skipped: %s", ex)
                report.missing.append((archive, ex.url))
            finally:
                report.bytes += f.bytes - before
            files_bar.update(1)
    finally:
        bytes_bar.close()
        files_bar.close()
        if own:
            session.close()
    return report
