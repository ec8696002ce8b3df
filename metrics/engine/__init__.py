"""The aggregation engine: builder SQL (`builder`), computing a metric's values (`compute`), storing
them (`store`) and keeping them fresh (`refresh`). Import from those modules directly.
"""
