"""`anxin bench --fault-suite` (suite.py says what it does and what must hold): options.py,
the oracle of ladder steps (oracle.py), the run (suite.py), the report (report.py)."""
