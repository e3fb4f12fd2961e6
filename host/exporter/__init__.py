"""``gagent exporter``: guest state for Prometheus, fed by the agents (see README, "Exporter").

* :mod:`.cache`    what is known of each domain and hypervisor (pure, no I/O)
* :mod:`.metrics`  the cache as Prometheus metric families (a custom Collector)
* :mod:`.guest`    what one collection asks a guest's agent (read-only commands only)
* :mod:`.poll`     the trio loops: one per hypervisor, events, intervals, deadlines
* :mod:`.serve`    the HTTP endpoint (prometheus_client's server, in a thread)
"""
