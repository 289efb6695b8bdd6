"""The test harness: real servers, processes and faults for component and e2e tests.

Modules (import from them directly):

* ``tests.harness.timing``: ``UNIT_S``, ``timeout(n)``, ``eventually(...)``;
* ``tests.harness.mosquitto``: ``MosquittoServer``; fixtures ``mosquitto``,
  ``mosquitto2``;
* ``tests.harness.postgres``: fixtures ``pg_server`` (admin DSN), ``pg_dsn`` (fresh
  database per test); ``dsn_with_database``, ``run_coroutine_sync``;
* ``tests.harness.procs``: ``Proc``, ``TcpProxy``, ``fusebox_command``; fixtures
  ``procs``, ``tcp_proxy_factory``.

``tests/conftest.py`` registers every fixture, so tests only name them.
"""
