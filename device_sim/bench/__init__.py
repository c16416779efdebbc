"""`anxin bench`: N homes on N MQTT connections, heartbeats plus an SOS rate, and the figures
(`load.run_bench`; `options`, `platform`, `disruptions`, `probes`, `report` beside it).

What it measures, per SOS press (each press is by a different home, so each must be exactly one
new alert):

* SOS → device ack: from the first publish to the platform's ack on the device's `ack` topic;
* SOS → SMS request: from the first publish to the moment the Twilio-compatible endpoint
  receives the POST of the nearest aide's call-out (the endpoint runs in this process);
* lost: presses with no alert in the database at the end; duplicated: a call-out requested
  more than once for one alert and responder, or more alerts than presses.

The platform runs in this process (default), as `anxin run <role>` subprocesses (`--fault`
needs that: a role is killed with SIGKILL mid-run and started again), or elsewhere
(`--external`). Before the measured phase every device is marked as known and online in the
scratch database: the bench measures the steady state, not the cold start of a fleet.
"""
