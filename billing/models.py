"""Customers, products and pricings, plans, contracts and phases (SPEC §8); invoices follow (§9)."""
