"""What a shop sends to many of its friends at once: message templates (圖文訊息範本) and send plans
(LINE發送計畫).

- ``templates``: a shop's named templates (one to five LINE message objects), their checks (ours in the
  owner's words, then LINE's validate endpoint), ``{name}`` filled per contact;
- ``cards``: the card form (image, title, text, up to three buttons) to a Flex bubble and back, so the owner
  never sees LINE's JSON; a carousel is up to ten cards;
- ``media``: images uploaded for templates, resized to LINE's limits and served publicly (LINE fetches them);
- send plans (a template, an audience, a purpose, a time): ``plans`` (what the owner may ask and do),
  ``schedule`` (Taipei time, birthdays), ``runs`` (starting each run once, delivering, counting outcomes),
  ``statistics`` (LINE's per-plan counts).

It sits with the domain (``customers``) and sends only through the outgoing core's sender interface.
"""
