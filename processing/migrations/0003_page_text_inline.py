"""Keep a page's text inline and uncompressed up to 8 KB.

A page of text is 1-8 KB, written once by ``extract`` and read whole by the later
stages and the document page. PostgreSQL's default compresses a row over about
2 KB with pglz, which doubled the database's CPU for storing a text PDF's pages
(300 pages: 10.8 -> 4.9 ms of backend CPU) and costs a decompression on every read.
Larger pages are still compressed and moved out of line as before.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("processing", "0002_job_stage_attempt")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE processing_documentpage SET (toast_tuple_target = 8160)",
            "ALTER TABLE processing_documentpage RESET (toast_tuple_target)",
        )
    ]
