from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0008_deferred_seq"),
    ]

    operations = [
        migrations.AddField(
            model_name="billablemetric",
            name="drain_claimed_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
