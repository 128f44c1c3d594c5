"""Test-only code shared by several test modules: fakes of the brokers the services talk to, and the
reference oracles the fast paths are checked against. Nothing under services/ imports it."""
