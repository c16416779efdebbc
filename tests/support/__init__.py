"""The test harness's helpers: plain functions and classes (waiting, the services the tests
run against, a Mosquitto of a test's own, the dispatch bench, the browser). Not a test module
and not a conftest: tests and conftest files import from here; fixtures stay in conftest.py."""
