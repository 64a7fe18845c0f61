"""Reaching the shop's friends: message templates (圖文訊息範本) and send plans (LINE發送計畫).

A plan is a template sent to an audience (customers/segments.py) for a purpose at a time; its deliveries go
through the outgoing core (outgoing/: multicast batches, or the outbox for personal texts), never beside it.
"""
