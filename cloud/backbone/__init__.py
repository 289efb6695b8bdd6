"""The NATS JetStream backbone of the cloud (issue 11).

* :mod:`cloud.backbone.config` - nats-server config text for one node or a cluster;
* :mod:`cloud.backbone.accounts` - per-gateway and per-service users (bcrypt);
* :mod:`cloud.backbone.cluster` - start/stop/kill/reload the nats-server processes;
* :mod:`cloud.backbone.streams` - the ``FUSEBOX_UP``/``FUSEBOX_DEAD`` streams.
"""
