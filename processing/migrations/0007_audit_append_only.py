"""The audit trail records why and from where, and only grows.

Each event gains the reason a person gave and the address their request came
from; ``from_status``/``to_status`` become ``status_before``/``status_after``.
A trigger refuses every ``UPDATE`` and ``DELETE`` of an audit event, whoever
sends it (the ORM refuses them too; this covers raw SQL and other clients).
``TRUNCATE`` fires no row trigger, so emptying the tables (tests, a throwaway
database) still works. Since a row may not be deleted, what it points at
(matter, job, actor) is protected instead of deleting or nulling it in cascade.
A later migration that must rewrite audit rows has to drop the trigger first.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

APPEND_ONLY = """
CREATE FUNCTION processing_auditevent_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'The audit trail is append-only: % of an audit event is refused.', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER processing_auditevent_append_only
    BEFORE UPDATE OR DELETE ON processing_auditevent
    FOR EACH ROW EXECUTE FUNCTION processing_auditevent_append_only();
"""

NOT_APPEND_ONLY = """
DROP TRIGGER processing_auditevent_append_only ON processing_auditevent;
DROP FUNCTION processing_auditevent_append_only();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('processing', '0006_job_active_index'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RenameField(
            model_name='auditevent',
            old_name='from_status',
            new_name='status_before',
        ),
        migrations.RenameField(
            model_name='auditevent',
            old_name='to_status',
            new_name='status_after',
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='status_before',
            field=models.CharField(blank=True, default='', help_text='The job\'s status before; blank for new.', max_length=16),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='reason',
            field=models.TextField(blank=True, default='', help_text='Why, as the person gave it.'),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='client_address',
            field=models.GenericIPAddressField(blank=True, help_text="Where the person's request came from.", null=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='matter',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='audit_events', to='processing.matter'),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='job',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='audit', to='processing.processingjob'),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='actor',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.RunSQL(APPEND_ONLY, NOT_APPEND_ONLY),
    ]
