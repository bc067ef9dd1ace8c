"""Saving a stage's checkpoint rows quickly.

A stage saves its results in batches, each its own transaction. Django's
``bulk_create`` spends most of its time building the INSERT in Python (about
50 ms for 300 pages of text here); PostgreSQL's COPY takes about 8 ms for the
same rows. So batches go in with COPY, straight from tuples, and only if one
collides with rows that already exist (rows an earlier attempt stored) is it
saved again with ``bulk_create(ignore_conflicts=True)``, which skips those.

Each batch's transaction starts with the stage's ``fence`` (its
:meth:`StageContext.fence`): a work horse whose stage was taken over stores nothing.

:func:`stream_rows` writes rows while the stage is still making them, so the
database stores some pages while the next are read instead of all of them at
the end.
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
# own speed sending each row, 0.905 (median of 19 runs) sending 64 at a time
# (bench/extract_throughput.py).
SEND_ROWS = 64


def stream_rows(
    model: type[models.Model],
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    seconds: float,
    max_size: int,
    size: Callable[[Sequence[Any]], int] = lambda row: 0,
    after_batch: Callable[[], None] = lambda: None,
    fence: Callable[[], None] = lambda: None,
) -> None:
    """Insert ``rows`` as the iterable makes them, a transaction (one COPY) per batch.

    Rows are gathered ``SEND_ROWS`` at a time. A batch's COPY is opened once its
    first chunk is in hand, and stays open while the batch's next chunks are
    made and sent; the batch ends once ``seconds`` have passed since it began
    (checked before each row is asked for) or its rows add up to ``max_size``
    by ``size``. ``fence`` runs first in each batch's transaction (it raises to
    refuse the batch: the stage was taken over, and the batch is rolled back).
    ``after_batch`` runs after each commit. While the COPY is open
    it holds the connection: making a row must not query the database (do that
    in ``after_batch``). If making a row raises, the rows made before it are
    kept and then the error is raised. Rows that would duplicate a unique key
    already stored are skipped.
    """
    statement, defaults = _copy_statement(model, columns)
    source = iter(rows)
    exhausted = False
    failure: Exception | None = None
    deadline, used = 0.0, 0  # of the batch being made

    def chunk(*, first: bool = False) -> list[Sequence[Any]]:
        """Up to SEND_ROWS more rows for the current batch, while it has time and room.

        A batch's first chunk has at least one row, unless the rows have run out.
        """
        nonlocal exhausted, failure, used
        made: list[Sequence[Any]] = []
        while len(made) < SEND_ROWS and (
            (first and not made) or (used < max_size and time.monotonic() < deadline)
        ):
            try:
                row = next(source)
            except StopIteration:
                exhausted = True
                break
            except Exception as error:  # kept rows first, then the error
                failure = error
                break
            made.append(row)
            used += size(row)
        return made

    while not exhausted and failure is None:
        deadline, used = time.monotonic() + seconds, 0
        pending = chunk(first=True)
        if not pending:
            break
        batch = list(pending)
        try:
            with _copy(statement, fence) as copy:
                while pending:
                    for row in pending:
                        copy.write_row([*row, *defaults])
                    pending = chunk() if not exhausted and failure is None else []
                    batch += pending
        except IntegrityError:
            with transaction.atomic():
                fence()
                _save_skipping_existing(model, columns, batch)
        except Exception as error:
            if failure is not None:  # the stage's own error says more than the lost batch's
                raise failure from error
            raise
        if failure is None:
            after_batch()
    if failure is not None:
        raise failure


@contextlib.contextmanager
def _copy(statement: str, fence: Callable[[], None]) -> Iterator[Any]:
    """A psycopg COPY in its own transaction, after ``fence``; its errors turned into Django's."""
    with transaction.atomic():
        fence()
        with (
            connection.wrap_database_errors,
            connection.cursor() as cursor,
            cursor.copy(statement) as copy,
        ):
            yield copy


def _copy_statement(model: type[models.Model], columns: Sequence[str]) -> tuple[str, list[Any]]:
    """``COPY table (columns, defaulted columns) FROM STDIN`` and the defaulted values."""
    meta = model._meta
    fields = {f.name: f for f in meta.concrete_fields}
    given = [fields[name] for name in columns]
    defaulted = [
        f for f in meta.concrete_fields if f not in given and not isinstance(f, models.AutoField)
    ]
    defaults = [f.get_db_prep_save(f.get_default(), connection) for f in defaulted]
    quote = connection.ops.quote_name
    names = ", ".join(quote(f.column) for f in [*given, *defaulted] if f.column)
    return f"COPY {quote(meta.db_table)} ({names}) FROM STDIN", defaults


def _save_skipping_existing(
    model: type[models.Model], columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    fields = {f.name: f for f in model._meta.concrete_fields}
    attnames = [fields[name].attname for name in columns]
    model._default_manager.bulk_create(
        [model(**dict(zip(attnames, row, strict=True))) for row in rows],
        ignore_conflicts=True,
    )
