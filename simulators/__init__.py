"""Simulated devices that talk to Fusebox as real peers would.

``simulators.household`` models a home's load (pure, seeded); ``simulators.meter``
publishes it as a real smart meter over MQTT (``fusebox sim meter``). Simulators use
``protocols`` and reach the edge and the cloud only over the network or through their
public entry points.
"""
