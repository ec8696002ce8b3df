# Billable metrics arrive with the metrics issue (#4).
