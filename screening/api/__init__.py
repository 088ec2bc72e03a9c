"""The REST API under ``/api/v1/`` (Django REST Framework, documented by drf-spectacular).

One module per subject: ``tokens`` (issuing and checking personal API keys), ``authentication``
(the DRF authentication class), ``permissions`` (the product's roles as DRF permissions),
``pagination`` (keyset pages over the audit log's order), ``serializers``, ``changes`` (the
history of rule and contact writes), ``parsers``, ``schema`` (the drf-spectacular extension),
``views`` (thin) and ``urls``. Everything a view does is done by the
modules the pages use too (screening.reports, screening.calls.decide_requests), so the API and the
pages cannot drift apart.
"""
