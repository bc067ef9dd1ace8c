"""Saving a stage's checkpoint rows quickly.

A stage saves its results in batches, each its own transaction. Django's
``bulk_create`` spends most of its time building the INSERT in Python (about
50 ms for 300 pages of text here); PostgreSQL's COPY takes about 8 ms for the
same rows. So batches go in with COPY, straight from tuples, and only if one
collides with rows that already exist (two workers on one stage after a lost
heartbeat) is it saved again with ``bulk_create(ignore_conflicts=True)``,
which skips those.

:func:`save_rows` writes a batch a stage has gathered; :func:`stream_rows`
writes rows while the stage is still making them, so the database stores some
pages while the next are read instead of all of them at the end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from django.db import IntegrityError, connection, models, transaction

# stream_rows hands rows to COPY this many at a time. Formatting and sending each row
# as it comes interleaves psycopg with the code that makes the rows (pdfium reading a
# page) and slows that down: on a 300-page text PDF, extract ran at 0.875 of pdfium's
# own speed sending each row, 0.92 sending 64 at a time (bench/extract_throughput.py).
SEND_ROWS = 64


def save_rows(
    model: type[models.Model], columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert ``rows`` (values for the fields named in ``columns``) in one transaction.

    Fields left out get their model default. Rows that would duplicate a unique
    key already stored are skipped.
    """
    if not rows:
        return
    statement, defaults = _copy_statement(model, columns)
    try:
        with _copy(statement) as copy:
            for row in rows:
                copy.write_row([*row, *defaults])
    except IntegrityError:
        _save_skipping_existing(model, columns, rows)


def stream_rows(
    model: type[models.Model],
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    seconds: float,
    max_bytes: int,
    size: Callable[[Sequence[Any]], int] = lambda row: 0,
    after_batch: Callable[[], None] = lambda: None,
) -> None:
    """Insert ``rows`` as the iterable makes them, a transaction per batch.

    Rows go to the database ``SEND_ROWS`` at a time, into one COPY per batch.
    A batch ends after ``seconds``, or once the rows in it add up to
    ``max_bytes`` by ``size``; ``after_batch`` runs after each commit. While a
    batch is open its COPY holds the connection: making a row must not query
    the database (do that in ``after_batch``). If making a row raises, the rows
    made before it are kept and the error is raised after their commit.
    Rows that would duplicate a unique key already stored are skipped.
    """
    statement, defaults = _copy_statement(model, columns)
    source = iter(rows)
    exhausted = False
    while not exhausted:
        batch: list[Sequence[Any]] = []
        failure: Exception | None = None
        try:
            with _copy(statement) as copy:
                deadline, used, sent = time.monotonic() + seconds, 0, 0
                while True:
                    try:
                        row = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    except Exception as error:  # kept rows first, then the error
                        failure, exhausted = error, True
                        break
                    batch.append(row)
                    used += size(row)
                    if len(batch) - sent >= SEND_ROWS:
                        for unsent in batch[sent:]:
                            copy.write_row([*unsent, *defaults])
                        sent = len(batch)
                    if used >= max_bytes or time.monotonic() >= deadline:
                        break
                for unsent in batch[sent:]:
                    copy.write_row([*unsent, *defaults])
        except IntegrityError:
            _save_skipping_existing(model, columns, batch)
        if failure is not None:
            raise failure
        if batch:
            after_batch()


@contextlib.contextmanager
def _copy(statement: str) -> Iterator[Any]:
    """A psycopg COPY in its own transaction, its errors turned into Django's."""
    with (
        transaction.atomic(),
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.copy(statement) as copy,
    ):
        yield copy


def _copy_statement(model: type[models.Model], columns: Sequence[str]) -> tuple[str, list[Any]]:
    """``COPY table (columns, defaulted columns) FROM STDIN`` and the defaulted values."""
    meta = model._meta
    given = [meta.get_field(name) for name in columns]
    defaulted = [
        f for f in meta.concrete_fields if f not in given and not isinstance(f, models.AutoField)
    ]
    defaults = [f.get_db_prep_save(f.get_default(), connection) for f in defaulted]
    quote = connection.ops.quote_name
    names = ", ".join(quote(f.column) for f in [*given, *defaulted])
    return f"COPY {quote(meta.db_table)} ({names}) FROM STDIN", defaults


def _save_skipping_existing(
    model: type[models.Model], columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    attnames = [model._meta.get_field(name).attname for name in columns]
    model.objects.bulk_create(
        [model(**dict(zip(attnames, row, strict=True))) for row in rows],
        ignore_conflicts=True,
    )
