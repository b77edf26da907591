"""Drift checks: corpus, query, document-statistics and quality drift (see docs/drift.md).

``stats`` holds the calibrated tests, ``snapshots`` the references, ``querylog`` the query log
reader, ``checks`` one check of an index, ``report`` its HTML page.
"""
