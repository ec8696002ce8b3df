"""CSV in and out of a usage event (SPEC §6).

`reading` (decoding, the header, mapping columns, converting cells, row-numbered errors), `imports`
(the import services: create, validate, confirm, run), `exports` (the records as CSV rows, and the
sources of the Usage data page's export form), `forms` and `views` (the dashboard's Usage data pages).
"""
