"""The delivery timeline's domain (DESIGN §9, issue 12): pure, no I/O, no clock.

``model.DeliveryModel`` turns manifests, load plans and stored events into parcel statuses
(``status``), ETAs (``eta``) and exceptions (``exceptions``), and says what changed as
``model.Notice`` objects; the hub's projector, store, push and API build on it. ``replay`` is
``hub-bridge eta replay``: the same ETA behind the agent's own trip engine.
"""
