"""The tests, a package: helpers are imported by their full name (`from tests.openai_stub_server import ...`)."""
