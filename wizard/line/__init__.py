"""The LINE adapter and nothing else: the client (outbound calls; sender.py, LINE as the outgoing core's
sender), the receiver (signature, parsing, durable storage of deliveries and events, quarantine), the worker
and its handler registry (events.py; what events mean is registered from customers/), LINE's problems and
limits. It imports no domain: the layers above register themselves into it (wizard/__init__.py)."""
