"""The reference consumer of status events: patient notifications, a downstream service.

It shows how a service outside erx-connector uses the event contract: it
imports only :mod:`contracts` (the schemas and the durable topology), pika, its
own modules and its own mailer, never ``app``. It has its own settings
(:mod:`notifier.settings`), its own table (``notifier_inbox``, created by
:mod:`notifier.store` at start) and its own command line, ``python -m notifier``
(docs/events.md, "Consuming: the reference consumer").

``settings``: environment to a frozen dataclass. ``broker``: pika connections.
``store``: the dedupe table and the patient directory. ``mailer``: plain-text
notices by SMTP or into a folder. ``consumer``: dedupe + email per message,
the consume loop, the dead-letter queue. ``cli``: the commands.
"""
