"""What users run today instead of a numbering service, as the forum thread (and django-sequences)
show it: a Django project served by gunicorn, measured on the same PostgreSQL as Docnum.

- ``/select_for_update``: the thread's ``ControlSequence.get_next_number``: lock the row, add one,
  save, in one transaction.
- ``/django-sequences``: django-sequences' ``get_next_value``, gapless, in one transaction.
- ``/trigger``: the thread's trigger: insert an invoice, and a ``BEFORE INSERT`` trigger sets its
  number from a PostgreSQL sequence.

Each answers the number as JSON. Deliberately favourable to the peers: persistent database
connections, no middleware, no sessions, no logging per request.
"""
