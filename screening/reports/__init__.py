"""Supervisor reporting: the audit log, call timelines, CSV export, statistics and the live view.

Query logic lives in these modules; ``views`` only parses requests and renders.
"""
