from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0007_sql_budget"),
    ]

    operations = [
        migrations.AddField(
            model_name="billablemetric",
            name="deferred_seq",
            field=models.PositiveBigIntegerField(default=0),
        ),
    ]
