"""Development tools, kept out of the product: nothing in ``screening`` outside this package
imports it (``tests/test_layout.py`` checks), and a production install leaves it out of
``INSTALLED_APPS`` with ``DEV_TOOLS=false``.

- ``bench/``: ``manage.py bench``, push and decision latency against real processes;
- ``soak/``: ``manage.py soak``, the scale-out setup under load and faults, then its invariants;
- ``seed``: ``manage.py seed_demo_history``, realistic call history (the demo seeds with it);
- ``procs``: child processes for the bench, the soak and the tests;
- ``management/commands/``: those commands and ``bench_reports``.
"""
