"""fleetsim plug-ins of this package: the ``top_entropy`` upload policy (``my_policy.top_entropy``)."""
