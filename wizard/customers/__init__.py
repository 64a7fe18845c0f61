"""The shop's customers: the customer data form's settings (form_settings), its fields (fields), its privacy
notice (notice), its personal links (links) and the evidence each submission leaves (consent).

Also what a LINE event means for the CRM (rules.py, registered into line/events.py at start), the form as an
outgoing message (form.py, a purpose of outgoing/) and contacts' profiles (profiles.py). Nothing here is asked
for by line/: it registers itself (the app factory calls ``rules.register``); views/contact_form.py, the wizard
step (steps/customer_form.py) and the API use the rest.
"""
