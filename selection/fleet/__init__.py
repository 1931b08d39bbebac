"""Over the air: a channel published to a fleet of devices, with staged rollouts.

Owns the server side of what ``selection.runtime.remote`` (the device side,
slim) fetches: which version each device is offered (``offers``), what the
devices reported (``devices``), staged rollouts as events in the store
(``rollout``) and the test that rolls a worse canary back (``evidence``), and
the HTTP server (``server``). May import the store, the channels and the
runtime's wire protocol; the runtime never imports this package.
"""
