"""What the tests and the benchmark both drive: databases, tenants, ``docnum serve`` processes and
retrying load with the guarantees to check after it.

It lives outside ``tests/`` and ``bench/`` so that neither imports the other: the benchmark runs
without the test suite, and the tests without the benchmark's peers and plots.
"""
