"""Every message we send, whatever it is for and whichever channel carries it: one outgoing core.

A message is an ``Outbox`` row (outbox.py: its life from queued to sent, refused, dead or unknown), rendered
by its purpose (purposes.py: the form, a reply typed by staff, and the next purposes, each one registration)
and handed to the channel's sender (sender.py: the interface; LINE's implementation is line/sender.py).
This package imports no channel and no domain: the app factory registers the sender, the CRM its purposes.
"""
