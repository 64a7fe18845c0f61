"""The shop's customers: the customer data form's settings (form_settings), its fields (fields), its privacy
notice (notice), its personal links (links) and the evidence each submission leaves (consent).

Nothing here speaks LINE: line/events.py and line/outbox.py ask this package whether the form goes out and
with which text; views/contact_form.py, the wizard step (steps/customer_form.py) and the API use the rest.
"""
