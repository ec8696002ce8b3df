"""A fast password hasher for the test process.

Django 5.2's PBKDF2 runs 1,000,000 iterations: one `organisation_make` (which creates the admin user) cost
0.5-2 s of CPU, most of a test's time. This hasher is PBKDF2-SHA256 with one iteration and the same algorithm
name, so its hashes are ordinary ``pbkdf2_sha256$1$...`` strings: a server or worker started by a test (with
the product settings) verifies them as any other Django would.
"""

from __future__ import annotations

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1
